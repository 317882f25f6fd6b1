"""Self-hosted LLM serving: engine replicas, KV cache, batching, load balancing, cost model."""
