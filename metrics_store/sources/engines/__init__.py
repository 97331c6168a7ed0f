"""The engine scraper: vLLM, SGLang and TGI's Prometheus endpoints, recorded (docs/engines.md)."""
