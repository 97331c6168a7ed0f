"""The fault soak: collectors record while Redis is killed, paused, starved and cut off.

`python -m bench.soak --minutes 5 --topology single|sentinel` (`make soak` runs both). Each
event carries its process (the node name) and its sequence number (`tokens_generated`), so
the end count tells, per event, stored once, stored twice, or missing, and a missing one must
be among those its process was told it lost.
"""
