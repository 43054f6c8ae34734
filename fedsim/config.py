"""Experiment configuration: one YAML file per experiment, validated, with `--set a.b=c` overrides.

Every error names the key path and what is allowed, and is raised before Ray starts.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedsim.errors import FedsimError

ALGORITHMS = ("local", "fedavg_lora", "centralized", "fedavg_vector", "fedcot", "fedcollm", "centralized_llm",
              "fedmkt")  # see fedsim.algorithms.REGISTRY


class ConfigError(FedsimError, ValueError):
    """A config file or override is invalid; the message names the key path."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskConfig(_Section):
    """Where client data comes from and how it is split over clients."""

    source: Literal["builtin", "file"] = "builtin"
    path: str | None = None
    public_path: str | None = Field(None, description="the server's public examples (file task; builtin: the public split)")
    train_per_client: int = Field(40, ge=1, description="mean examples per client (builtin)")
    size_skew: float | None = Field(None, gt=0, description="Dirichlet alpha of quantity skew; null = equal")
    domain_alpha: float | None = Field(None, gt=0, description="Dirichlet alpha over domains; null = IID")
    client_domains: list[str] | None = Field(
        None, description="builtin: the domains client data come from (null: all); test and public span all")
    test_size: int = Field(200, ge=1)
    public_size: int = Field(500, ge=0)
    min_steps: int = Field(2, ge=1, le=4)
    max_steps: int = Field(4, ge=1, le=4)

    @model_validator(mode="after")
    def _check(self) -> "TaskConfig":
        if self.source == "file" and not self.path:
            raise ValueError("task.path is required when task.source is 'file'")
        if self.client_domains is not None:
            from fedsim.data.task import DOMAINS

            unknown = sorted(set(self.client_domains) - set(DOMAINS))
            if self.source != "builtin" or not self.client_domains or unknown:
                raise ValueError(f"task.client_domains must be a non-empty list of the builtin task's domains "
                                 f"{list(DOMAINS)} (got {self.client_domains}, source {self.source})")
        if self.source == "builtin" and self.public_path:
            raise ValueError("task.public_path is for task.source 'file'; the builtin task has its public split "
                             "(task.public_size)")
        if self.min_steps > self.max_steps:
            raise ValueError("task.min_steps must be <= task.max_steps")
        return self


class Distribution(_Section):
    """A per-client draw: log-normal around a median (sigma 0 = the same for everyone)."""

    median: float = Field(gt=0)
    sigma: float = Field(0.0, ge=0)


class ClientsConfig(_Section):
    """The registered population and its heterogeneity."""

    num: int = Field(20, ge=1)
    per_round: int = Field(10, ge=1)
    over_commit: float = Field(1.0, ge=1.0, description="sample ceil(per_round*over_commit), keep the fastest")
    deadline_s: float | None = Field(None, gt=0, description="simulated seconds; later clients are dropped")
    availability: float = Field(1.0, gt=0, le=1.0, description="probability a client is online in a round")
    sampling: Literal["fixed", "poisson"] = Field(
        "fixed", description="fixed: exactly ceil(per_round*over_commit); poisson: each client with rate q")
    presets: dict[str, float] = Field(default_factory=lambda: {"llama-1m": 1.0},
                                      description="SLM preset (or local path) -> share of clients")
    seconds_per_sample: Distribution = Field(default_factory=lambda: Distribution(median=0.05, sigma=0.5))
    bandwidth_mbps: Distribution = Field(default_factory=lambda: Distribution(median=20.0, sigma=0.7))

    @field_validator("presets")
    @classmethod
    def _shares(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("clients.presets needs at least one preset")
        if any(share <= 0 for share in value.values()):
            raise ValueError("clients.presets shares must be > 0")
        from fedsim.models.presets import check_model_name

        for name in value:
            check_model_name(name)
        return value

    @model_validator(mode="after")
    def _check(self) -> "ClientsConfig":
        if self.per_round > self.num:
            raise ValueError(f"clients.per_round ({self.per_round}) must be <= clients.num ({self.num})")
        return self


class TrainConfig(_Section):
    """Local training of each client's SLM."""

    target: Literal["answer", "rationale"] = "rationale"
    local_steps: int = Field(20, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    max_len: int = Field(96, ge=8)
    keep_optimizer_state: bool = Field(
        False, description="carry each client's Adam state across rounds (algorithms that keep client state)")


class LoraConfig(_Section):
    """LoRA adapters through peft."""

    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"
    train_embeddings: bool = Field(False, description="also train (and exchange) the token embeddings")
    train_norms: bool = Field(False, description="also train (and exchange) the normalisation weights")


class EvalConfig(_Section):
    """How accuracy is measured."""

    every: int = Field(1, ge=0, description="evaluate every N rounds and after the last; 0 = never")
    mode: Literal["answer", "rationale", "both"] = Field(
        "rationale", description="answer: answer directly; rationale: steps first; both: report each")
    max_clients: int = Field(20, ge=1, description="clients whose own model is evaluated (local)")
    client_test_size: int = Field(40, ge=1, description="test examples each client's own model is scored on")
    batch_size: int = Field(64, ge=1)


class CommConfig(_Section):
    """What travels on the simulated wire."""

    adapter_dtype: Literal["float32", "float16"] = "float32"


class SyntheticConfig(_Section):
    """The fedavg_vector benchmarking workload (no model): a vector and fixed work per client."""

    vector_size: int = Field(100_000, ge=1)
    busy_ms: float = Field(0.0, ge=0)


class SecAggSettings(_Section):
    """Secure aggregation of summed client updates (fedsim.secagg)."""

    mode: Literal["off", "protocol", "cost"] = "off"
    clip_range: float = Field(0.5, gt=0, description="each update coordinate is clipped to [-c, c]")
    quant_bits: int = Field(24, ge=1, le=52)
    modulus_bits: Literal[32, 64] = 64
    threshold: float | int = Field(0.5, gt=0, description="Shamir t: an int, or a fraction of holders")
    neighbours: int | Literal["log"] | None = Field(None, description="null = complete graph")
    max_weight: int = Field(1_000_000, ge=1)
    dropout_rate: float = Field(0.0, ge=0, lt=1, description="chance a client drops after masking")


class _GaussianNoise(_Section):
    """A Gaussian mechanism's noise: given, or calibrated to a target epsilon (exactly one)."""

    noise_multiplier: float | None = Field(None, ge=0)
    target_eps: float | None = Field(None, gt=0, description="calibrate sigma for the planned releases")

    @model_validator(mode="after")
    def _one_of(self) -> "_GaussianNoise":
        if (self.noise_multiplier is None) == (self.target_eps is None):
            raise ValueError("give exactly one of noise_multiplier and target_eps")
        return self


class DPSGDSettings(_GaussianNoise):
    """DP-SGD on the clients' LoRA parameters (Opacus as the engine, dp-accounting for epsilon)."""

    max_grad_norm: float = Field(1.0, gt=0)


class CentralDPSettings(_GaussianNoise):
    """User-level DP-FedAvg: clients clip their update, the server adds Gaussian noise to the sum."""

    clip_norm: float = Field(gt=0)


class PrivacyConfig(_Section):
    """Privacy budgets and mechanisms; every release is accounted per protected data unit."""

    budget_eps: float = Field(math.inf, gt=0, description="per client; a release beyond it is refused")
    budget_delta: float = Field(1e-5, gt=0, lt=1)
    server_budget_eps: float = Field(math.inf, gt=0, description="user-level budget under central DP")
    dp_sgd: DPSGDSettings | None = None
    central: CentralDPSettings | None = None


class LLMSettings(_Section):
    """The server LLM, served by Ray Serve (serve/), for algorithms that query it."""

    model: str | None = Field(None, description="local Hugging Face directory (hf/vllm backends)")
    backend: Literal["hf", "vllm", "openai"] = "hf"
    backend_options: dict[str, Any] = Field(default_factory=dict, description="extra backend options")
    max_batch_size: int = Field(16, ge=1)
    batch_wait_timeout_s: float = Field(0.02, ge=0)
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    request_timeout_s: float = Field(900.0, gt=0, description="a client's wait for one LLM request")
    request_retries: int = Field(2, ge=0, description="resends of a request that timed out or lost its replica")
    time: Literal["declared", "measured"] = Field(
        "declared", description="the LLM's time on a request in the virtual clock: tokens over tokens_per_s, "
                                "or the measured wall time of the request")
    tokens_per_s: float = Field(2000.0, gt=0, description="declared server throughput (prompt + generated tokens)")


class FedCoTDecoderSettings(_Section):
    """The learned local decoder of `fedcot.recover: decoder` (fedsim.algorithms.fedcot_decoder): a
    small causal LM the server fine-tunes on public questions only, shipped to each client once."""

    model: str = Field("llama-0.3m-pt", description="preset, pretrained base or local model directory it starts from")
    public_questions: int = Field(400, ge=1, description="public questions it is trained on (<= task.public_size)")
    steps: int = Field(300, ge=1, description="optimizer steps, all weights trained")
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    max_len: int = Field(192, ge=16, description="tokens of (question, LLM reply, rationale) per row")

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from fedsim.models.presets import check_model_name

        check_model_name(value)
        return value


class FedCoTSettings(_Section):
    """FedCoT: clients perturb their prompts, the server LLM returns rationales, the SLM learns both."""

    mechanism: Literal["none", "em", "aem"] = "em"
    eps_per_token: float = Field(math.inf, gt=0, description="per-token epsilon; inf = no perturbation")
    aem_lap_fraction: float = Field(0.5, gt=0, lt=1, description="share of eps spent on AEM's Laplace step")
    top_k: int = Field(20, ge=2, description="EM candidate group size")
    exclude: list[str] = Field(default_factory=list, description="token classes left unperturbed")
    alpha: float = Field(0.5, ge=0, le=1, description="L = alpha*CE(rationale) + (1-alpha)*CE(answer)")
    recover: Literal["none", "decoder", "oracle"] = Field(
        "none", description="none: train on the LLM's replies; decoder: a learned local decoder rewrites them "
                            "against the clean question; oracle: rule-based, redoes the task's ring arithmetic")
    decoder: FedCoTDecoderSettings = Field(default_factory=FedCoTDecoderSettings)
    max_new_tokens: int = Field(48, ge=1)
    max_prompt_tokens: int = Field(
        72, ge=1, description="questions are cut to this many LLM tokens; bounds the units perturbed per prompt")

    @field_validator("recover", mode="before")
    @classmethod
    def _no_boolean(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"recover is one of none, decoder, oracle (got {value}); the former `recover: true` "
                             "is `oracle` (rule-based, it knows the task's arithmetic), `false` is `none`")
        return value


class ServerSettings(_Section):
    """The server trainer: a trainable copy of the server LLM (llm.model) with a LoRA, and of each SLM
    preset, for the algorithms whose server learns (fedcollm, centralized_llm)."""

    num_cpus: float = Field(1.0, ge=0, description="CPUs of the ServerTrainer actor (fractions allowed)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs of the ServerTrainer actor (fractions allowed)")
    engine: Literal["torch", "deepspeed"] = Field(
        "torch", description="deepspeed: ZeRO stage 2 with optimizer offload (the deepspeed extra)")
    lr: float = Field(1e-3, gt=0)
    epochs: int = Field(1, ge=1, description="passes over the public examples per training call")
    batch_size: int = Field(8, ge=1)
    max_grad_norm: float | None = Field(1.0, gt=0)
    max_len: int = Field(96, ge=8, description="tokens per public example")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="the LLM's LoRA (served and trained)")


class FedCoLLMSettings(_Section):
    """FedCoLLM (algorithms.md §3): secure FedAvg of the SLM LoRA, then mutual distillation between
    the aggregated SLM and the LLM on the server's public examples."""

    kd_lambda: float = Field(1.0, ge=0, description="weight of the KD term: L = L_LM + lambda T^2 KL")
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(16, ge=1, description="teacher logits kept per position")
    server_epochs: int = Field(1, ge=1, description="passes over the public examples in each distillation")
    public_per_round: int | None = Field(None, ge=1, description="public examples per round (null: all)")


class FedMKTSettings(_Section):
    """FedMKT (algorithms.md §5): mutual distillation between the LLM and SLMs of other tokenizers on
    the public examples, with top-k lists moved across tokenizers (vocabulary maps, DTW alignment)."""

    kd_alpha: float = Field(0.9, ge=0, le=1, description="L = alpha L_LM + (1 - alpha) T^2 KL")
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(16, ge=1, description="logits kept per position in the lists that cross the wire")
    strategy: Literal["greater", "weighted_mean"] = Field(
        "greater", description="per example: the candidate with the lowest NLL per answer character, or the mixture")
    llm_training: bool = Field(True, description="false: one way, LLM to SLM (the LLM's lists are sent once)")
    aggregate_freq: int | None = Field(
        None, ge=1, description="homogeneous: FedAvg of the SLM adapters every n rounds (one preset; null: never)")
    public_epochs: int = Field(1, ge=1, description="client passes over the public examples per distillation")
    server_epochs: int = Field(1, ge=1, description="LLM passes over the public examples per round")
    align_on_server: bool = Field(
        False, description="the server moves its lists onto each SLM's tokenizer (one-hot positions cost one entry)")
    skip_unaligned: bool = Field(False, description="positions without a 1:1 next-token match get no KD term")


class EngineConfig(_Section):
    """The Ray worker pool."""

    num_workers: int | Literal["auto"] = "auto"
    num_cpus_per_worker: float = Field(1.0, ge=0)
    num_gpus_per_worker: float = Field(0.0, ge=0)
    dedicated: bool = Field(False, description="one worker actor per client (small N, clusters)")
    ray_address: str | None = None

    @field_validator("num_workers")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("engine.num_workers must be >= 1 or 'auto'")
        return value


class ExperimentConfig(_Section):
    """A whole experiment: one or several algorithms run on the same federation."""

    name: str = "experiment"
    seed: int = 0
    algorithms: list[str] = Field(default_factory=lambda: ["fedavg_lora"])
    rounds: int = Field(5, ge=1)
    task: TaskConfig = Field(default_factory=TaskConfig)
    clients: ClientsConfig = Field(default_factory=ClientsConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    comm: CommConfig = Field(default_factory=CommConfig)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    secagg: SecAggSettings = Field(default_factory=SecAggSettings)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    fedcot: FedCoTSettings = Field(default_factory=FedCoTSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    fedcollm: FedCoLLMSettings = Field(default_factory=FedCoLLMSettings)
    fedmkt: FedMKTSettings = Field(default_factory=FedMKTSettings)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    output_dir: str = "runs"

    @field_validator("algorithms")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("algorithms needs at least one entry")
        unknown = [name for name in value if name not in ALGORITHMS]
        if unknown:
            raise ValueError(f"unknown algorithm(s) {unknown}; allowed: {list(ALGORITHMS)}")
        if len(set(value)) != len(value):
            raise ValueError("algorithms must not repeat")
        return value

    @model_validator(mode="after")
    def _decoder_data_fits(self) -> "ExperimentConfig":
        fedcot = self.fedcot
        if "fedcot" not in self.algorithms or fedcot.recover != "decoder":
            return self
        if self.task.source != "builtin":
            raise ValueError("fedcot.recover: decoder trains on the built-in task's public split; "
                             "task.source: file has none")
        if self.task.public_size < fedcot.decoder.public_questions:
            raise ValueError(f"fedcot.recover: decoder trains on fedcot.decoder.public_questions "
                             f"({fedcot.decoder.public_questions}) public questions, but task.public_size is "
                             f"{self.task.public_size}")
        return self

    @model_validator(mode="after")
    def _server_learning_fits(self) -> "ExperimentConfig":
        learning = [name for name in ("fedcollm", "centralized_llm", "fedmkt") if name in self.algorithms]
        if not learning:
            return self
        if self.llm.backend != "hf":
            raise ValueError(f"{learning[0]} trains the server LLM and publishes its adapter to the deployment: "
                             f"it needs llm.backend hf (got {self.llm.backend})")
        if not self.llm.model:
            raise ValueError(f"{learning[0]} needs llm.model: the server LLM's local directory or shipped base")
        if "fedcollm" in self.algorithms:
            if len(self.clients.presets) != 1:
                raise ValueError("fedcollm averages one SLM architecture: clients.presets must name exactly one "
                                 f"preset (got {sorted(self.clients.presets)})")
            if self.task.source == "builtin" and self.task.public_size < 1:
                raise ValueError("fedcollm distils on the server's public examples: task.public_size must be >= 1")
            if self.task.source == "file" and not self.task.public_path:
                raise ValueError("fedcollm distils on the server's public examples: give task.public_path")
        if "fedmkt" in self.algorithms:
            if self.task.source == "builtin" and self.task.public_size < 1:
                raise ValueError("fedmkt distils on the public examples: task.public_size must be >= 1")
            if self.task.source == "file" and not self.task.public_path:
                raise ValueError("fedmkt distils on the public examples: give task.public_path")
            if self.fedmkt.aggregate_freq is not None and len(self.clients.presets) != 1:
                raise ValueError("fedmkt.aggregate_freq averages the SLM adapters: clients.presets must name "
                                 f"exactly one preset (got {sorted(self.clients.presets)})")
        return self

    @model_validator(mode="after")
    def _privacy_fits(self) -> "ExperimentConfig":
        if self.privacy.central is not None:
            if self.clients.sampling != "poisson":
                raise ValueError("privacy.central needs clients.sampling: poisson (the accountant assumes it)")
            if any(name not in ("fedavg_lora", "fedavg_vector") for name in self.algorithms):
                raise ValueError("privacy.central applies to fedavg_lora and fedavg_vector only")
        if self.privacy.dp_sgd is not None and "centralized" in self.algorithms:
            raise ValueError("privacy.dp_sgd does not apply to centralized: its pooled training has no client "
                             "whose records are accounted; run centralized in a separate experiment")
        return self

    @model_validator(mode="after")
    def _optimizer_state_kept(self) -> "ExperimentConfig":
        if not self.train.keep_optimizer_state:
            return self
        from fedsim.algorithms import algorithm_class

        stateless = [name for name in self.algorithms if not algorithm_class(name).keeps_client_state]
        if stateless:
            raise ValueError(f"train.keep_optimizer_state needs an algorithm that keeps client state across "
                             f"rounds (local, fedcot); {', '.join(stateless)} keeps none")
        if self.privacy.dp_sgd is not None:
            raise ValueError("train.keep_optimizer_state does not apply with privacy.dp_sgd: DP-SGD starts a "
                             "fresh optimizer every round")
        return self

    def sample_rate(self) -> float:
        """Each client's chance to be drawn in a round (the q of the accountants)."""
        return self.sampled_per_round() / self.clients.num

    def sampled_per_round(self) -> int:
        """How many clients are drawn each round before the fastest are kept."""
        return min(self.clients.num, math.ceil(self.clients.per_round * self.clients.over_commit))


def _format_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])  # empty for a check across sections
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{path}: {message}" if path else message)
    return "invalid config: " + "; ".join(lines)


def _parse_value(text: str) -> Any:
    """Parse an override value as YAML (numbers, booleans, lists, null); fall back to the string."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=c` overrides to a raw config mapping (in place) and return it."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        parts = key.split(".")
        node = raw
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:depth + 1])} is not a section")
            node = child
        node[parts[-1]] = _parse_value(value)
    return raw


def validate(raw: dict[str, Any]) -> ExperimentConfig:
    """Validate a raw mapping into an ExperimentConfig, or raise ConfigError naming every bad key (one line)."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format_error(error)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML experiment file, apply overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return validate(apply_overrides(raw, overrides or []))


def dump_config(config: ExperimentConfig) -> str:
    """The resolved config as YAML text (every default written out)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
