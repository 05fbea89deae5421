"""Where an agent's model and tools run, for the CLI: Bedrock's Converse API and Athena on AWS, a
local OpenAI-compatible endpoint (``local_llm``) and the sandboxed DuckDB catalog on a laptop.

``AgentBackend.answer(config, prompt, question)`` picks the model's API by its id (``ollama/...``
and ``openai-compatible/...`` are local, anything else Bedrock), builds fresh analyst tools per
conversation, and ``reference(sql)`` / ``complete(model_id, system, text)`` serve the evaluation's
reference queries and its judge the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stagewise.pipeline import analyst, catalog, local_llm, spec_store
from stagewise.pipeline.spec import load_spec
from stagewise.platform.runtime.embedded import stagewise_home
from stagewise.platform.runtime.environment import Environment
from stagewise.platform.runtime.idhash import read_id_salt
from stagewise.platform.runtime.objects import ObjectStore
from stagewise.registry.records import AgentConfig


class BackendUnavailable(RuntimeError):
    """The model cannot be called here (a Bedrock model on the embedded AWS)."""


@dataclass
class AgentBackend:
    """The model APIs and tools of one environment (module docstring)."""

    conn: Environment
    registry: Any
    objects: ObjectStore
    _llm: Any = field(default=None, repr=False)
    _db: Any = field(default=None, repr=False)

    @property
    def athena(self) -> catalog.Athena | None:
        """The stack's Athena workgroup on AWS; None on the embedded AWS (the local catalog)."""
        if self.conn.embedded:
            return None
        env = self.conn.settings.environment
        return catalog.Athena(self.conn.clients.client("athena"), catalog.athena_workgroup(env), catalog.glue_database(env))

    def can_call(self, model_id: str) -> bool:
        """A local model id, or any on AWS (the embedded AWS has no Bedrock runtime)."""
        return local_llm.is_local(model_id) or not self.conn.embedded

    def _tools(self) -> analyst.AnalystTools:
        env, objects, registry = self.conn.settings.environment, self.objects, self.registry
        return analyst.AnalystTools(
            objects, self.conn.resources.data_bucket.name, registry.get_version, registry.champion,
            read_id_salt(self.conn.clients, self.conn.resources).key, stagewise_home() / "cache" / env,
            spec_of=lambda v: spec_store.version_spec(objects, v) or load_spec(v.model),
            specs=lambda: spec_store.catalog_specs(registry, objects), athena=self.athena)

    def llm(self) -> Any:
        """The OpenAI-compatible client (made once)."""
        if self._llm is None:
            self._llm = local_llm.client()
        return self._llm

    def answer(self, config: AgentConfig, prompt: str, question: str) -> analyst.Answer:
        """One conversation of ``config``'s model with fresh tools.

        Raises:
            BackendUnavailable: a Bedrock model on the embedded AWS.
        """
        if local_llm.is_local(config.model_id):
            return local_llm.chat(self.llm(), config, prompt, question, self._tools())
        if self.conn.embedded:
            raise BackendUnavailable(f"{config.model_id} is a Bedrock model and the embedded AWS has no Bedrock runtime")
        return analyst.converse(self.conn.clients.client("bedrock-runtime"), config, prompt, question, self._tools())

    def reference(self, sql: str) -> float | None:
        """The first value of a reference SELECT over the results catalog (Athena on AWS, the
        sandboxed local catalog otherwise)."""
        athena = self.athena
        if athena is not None:
            _, rows = athena.query(sql, 1)
        else:
            if self._db is None:
                self._db = self._tools()._catalog()
            _, rows = catalog.query(self._db, sql, 1)
        return float(rows[0][0]) if rows and rows[0] and rows[0][0] is not None else None

    def complete(self, model_id: str, system: str, text: str) -> str:
        """One reply at temperature 0 (the judge's call).

        Raises:
            BackendUnavailable: a Bedrock model on the embedded AWS.
        """
        if local_llm.is_local(model_id):
            return local_llm.complete(self.llm(), model_id, system, text, 0.0, 256)
        if self.conn.embedded:
            raise BackendUnavailable(f"{model_id} is a Bedrock model and the embedded AWS has no Bedrock runtime")
        return analyst.converse_text(self.conn.clients.client("bedrock-runtime"), model_id, system, text)
