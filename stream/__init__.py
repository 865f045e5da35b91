"""The Faust side: topics, the heartbeat model and its validation, the batching agent."""
