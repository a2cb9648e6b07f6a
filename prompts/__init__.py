"""Prompt templates, one YAML file per environment; installed as the package data of ``agentpo.prompts``."""
