"""The baselines of the query benchmark: a bare FastAPI endpoint, and one doing a Redis GET."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.responses import ORJSONResponse

CONSTANT = {"timestamps": [], "queryRate": [], "totalQueries": 0, "avgLatencyMs": 0.0}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.redis = aioredis.Redis.from_url(os.environ["REDIS_URL"])
    await app.state.redis.set("bench:value", b'{"totalQueries": 0}')
    yield
    await app.state.redis.aclose()


app = FastAPI(lifespan=lifespan)


@app.get("/const")
async def constant() -> ORJSONResponse:
    return ORJSONResponse(CONSTANT)


@app.get("/get")
async def one_get() -> ORJSONResponse:
    value = await app.state.redis.get("bench:value")
    return ORJSONResponse({"value": value.decode() if value else None})
