"""The server LLM on Ray Serve.

serve.params      GenerationParams, Completion, TopKResult, TokenizerInfo (no Ray, no torch)
serve.settings    ServeSettings: batching, sizing and backend of the deployment (no Ray)
serve.backends    LLMBackend and its backends: hf (default), vllm (optional), openai (HTTP)
serve.deployment  LLMServer: batched generate / topk_logits, set_adapter, stats, /v1/completions
serve.app         start_llm_deployment, stop_llm_deployment, publish_adapter, current_adapter_version,
                  replica_stats
serve.adapter_store  the current adapter (version, arrays) of an application, read by every replica
serve.tiny        a tiny random causal LM saved to disk, for tests and benchmarks
serve.inprocess   InProcessLLM: the hf backend as an in-process LLMClient (tests, benchmarks; no Ray)
"""
