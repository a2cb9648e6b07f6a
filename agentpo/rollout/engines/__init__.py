"""Generation engines behind one interface (:class:`~agentpo.rollout.engines.base.Engine`).

``hf.TransformersEngine`` is the embedded default; import it from its module so that importing the
interface does not load transformers models.
"""
