"""The one configuration object. Built once at the edge (CLI, API, tests) and passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path.home() / ".wardround"


# The embedded default model (a preset name): the one place it is set. Chosen by what scored
# best on the EHR QA eval on this kind of machine (see the README's preset table).
DEFAULT_MODEL = "qwen2.5-coder-1.5b"


class Settings(BaseSettings):
    """Everything wardround can be told, from `WARDROUND_*` environment variables or a `.env`."""

    model_config = SettingsConfigDict(env_prefix="WARDROUND_", env_file=".env", extra="ignore")

    # Where state lives: synthetic patients, the local FHIR database, logs, pids, runs.
    home: Path = Field(default_factory=_default_home)
    # Public benchmark files (AgentClinic, MedAgentBench); None means the download cache.
    benchmark_data_dir: Path | None = None

    # FHIR
    # Empty: the local stack's server, http://127.0.0.1:<fhir_port>/fhir.
    fhir_base_url: str = ""
    fhir_auth: Literal["none", "bearer", "smart"] = "none"
    fhir_token: SecretStr | None = None
    smart_client_id: str | None = None
    smart_token_url: str | None = None
    smart_private_key_path: Path | None = None
    smart_key_id: str | None = None
    smart_scope: str = "system/*.read"
    smart_alg: Literal["RS384", "ES384", "RS256"] = "RS384"
    fhir_timeout_s: float = 30.0
    fhir_max_pages: int = 100
    # Bounds on every FHIR read (see wardround.fhir.bounded): the page size asked for, the
    # most records one read returns (more: a partial read, said so), the largest body read,
    # and the largest `$everything` page kept before reading the chart per type instead.
    fhir_page_size: int = 100
    fhir_max_records: int = 10_000
    fhir_max_body_bytes: int = 32 * 2**20
    fhir_everything_max_bytes: int = 4 * 2**20

    # Model: a preset name, or an explicit OpenAI-compatible endpoint + model name.
    model: str = DEFAULT_MODEL
    model_base_url: str | None = None
    model_name: str | None = None
    model_api_key: SecretStr = SecretStr("EMPTY")
    model_backend: Literal["openai", "transformers", "embedded"] | None = None  # None: preset's
    tool_protocol: Literal["json", "native"] | None = None  # None: the preset's own
    # How to ask the server for schema-constrained JSON: "openai" (json_schema, vLLM),
    # "llamacpp" (json_object + schema), "none"; None picks by backend.
    constrained_output: Literal["openai", "llamacpp", "none"] | None = None
    # A 1.5B model on 2 CPU cores reads about 36 prompt tokens/s: a long prompt takes minutes.
    request_timeout_s: float = 600.0
    temperature: float = 0.0
    max_tokens: int = 512
    # PHI to hosted models (docs/safety.md): pseudonymise what is sent to a model endpoint
    # that is not on this machine (names, identifiers, contacts, addresses to tokens; dates
    # shifted per patient) and re-identify the answers. The key that derives each patient's
    # date offset (None: one made and kept in home/phi.key). `phi_local_hosts`, when set,
    # lists the only hosts counted as this machine's (tests: [] makes loopback "hosted").
    phi_pseudonymise: bool = False
    phi_key: SecretStr | None = None
    phi_local_hosts: list[str] | None = None

    # Local stack ports (0 = pick a free one at start).
    fhir_port: int = 8090
    model_port: int = 0
    model_ctx: int = 8192
    # llama.cpp threads for the embedded model; None: the machine's physical cores.
    model_threads: int | None = None
    # Prompt states the embedded server keeps (MiB of KV; 0: off). One graph turn sends
    # several fixed system prompts in turn (the copilot's action choice, the planner's plan);
    # with one cached prefix each evicts the other and ~500 tokens are read again each call.
    # Each kept state also holds a copy of the logits buffer (~300 MiB for a 150k vocabulary),
    # so keep it small.
    model_prompt_cache_mib: int = 64

    # Copilot HTTP API: bearer token clients must send (None: no auth), thread checkpoints
    # (None: SQLite in home; a postgresql:// DSN for Postgres).
    api_token: SecretStr | None = None
    # How the copilot answers chart questions: "planner" (the EHR QA planner, one argument-
    # free action for the model; what a small model can drive) or "tools" (the model calls
    # the raw FHIR reads itself, a free tool loop for models strong enough to drive one).
    copilot_chart: Literal["planner", "tools"] = "planner"
    checkpoint_url: SecretStr | None = None
    # Postgres thread store: connections kept per API worker, and how long one may sit idle
    # before the pool closes it (keep it under the server's or proxy's idle timeout).
    checkpoint_pool_size: int = Field(default=10, ge=1)
    checkpoint_pool_max_idle_s: float = Field(default=300.0, gt=0)
    # Image and guideline indexes in a Chroma server (`chroma run`), e.g. http://host:8000;
    # None: the embedded store under chroma_dir.
    chroma_url: str | None = None

    # Retrieval: the image encoder ("efficientnet-lite0" embedded, "medsiglip" on a GPU) and
    # an optional local path or hub id for its weights.
    image_encoder: str = "efficientnet-lite0"
    image_model: str | None = None
    chroma_path: Path | None = None

    # In-process models (transformers chat backend, image encoders): "auto" takes CUDA, then
    # MPS, then the CPU; name one ("cpu", "cuda:1") to leave a GPU to a vLLM server. Images
    # per encoder forward pass (larger batches pay on a GPU, not on a CPU).
    device: str = "auto"
    encoder_batch_size: int = Field(default=16, ge=1)

    # CDS Hooks service (/cds-services): the public base URL EHRs call (the JWT's `aud` is
    # built from it; None: the request's own URL), and the trusted CDS Clients, each `iss`
    # with the URL of its JWK Set, e.g. {"https://sandbox.cds-hooks.org":
    # "https://sandbox.cds-hooks.org/.well-known/jwks.json"}. Without a JWT requirement any
    # caller gets cards: for local development only.
    cds_base_url: str | None = None
    cds_trusted_issuers: dict[str, str] = Field(default_factory=dict)
    cds_require_jwt: bool = True

    # SMART App Launch of the copilot page (on when smart_app_client_id is set): the client
    # registered with the EHR's authorization server (a secret only for a confidential
    # client), the scopes asked for, the FHIR servers an EHR launch may name as `iss` (empty:
    # fhir_base_url only), the redirect URL registered (None: <this server>/smart/callback).
    smart_app_client_id: str | None = None
    smart_app_client_secret: SecretStr | None = None
    smart_app_scope: str = "launch/patient openid fhirUser patient/*.read"
    smart_app_issuers: list[str] = Field(default_factory=list)
    smart_app_redirect_url: str | None = None
    smart_app_session_ttl_s: float = Field(default=8 * 3600, gt=0)

    @model_validator(mode="after")
    def _local_fhir_by_default(self) -> Settings:
        if not self.fhir_base_url:
            self.fhir_base_url = f"http://127.0.0.1:{self.fhir_port}/fhir"
        return self

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def chroma_dir(self) -> Path:
        return self.chroma_path or self.home / "chroma"
