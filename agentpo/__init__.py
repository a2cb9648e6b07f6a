"""agentpo: agentic RL for LLMs with HölderPO."""

__version__ = "0.1.0"
