"""metrics-store's HTTP and WebSocket API."""
