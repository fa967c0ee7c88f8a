"""The settings of one ``train-export`` run, as ``run.json`` keeps them for ``--resume``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import ConfigError
from ..quant import QuantScheme
from ..validate.gate import Gate


@dataclass(frozen=True)
class TrainExportConfig:
    target: str = "onnxruntime"            # runtime the model is deployed to (chooses the export profile)
    teacher: str | None = None             # model card .json; None = the teacher shipped with dfq-deploy
    recipe: str = "ptq"                    # data-free recipe name (dfq_deploy.recipes.RECIPES; DEFAULT_RECIPE)
    recipe_options: dict = field(default_factory=dict)   # overrides of the recipe's config fields
    scheme: QuantScheme = QuantScheme()    # bit widths of the student
    eval_data: str = "fashion-mnist"       # evaluation set, never used for training: fashion-mnist, imagefolder:PATH
                                           # (labelled when its folders are the card's classes) or synthetic (no
                                           # labels: parity is checked, accuracy is not measured)
    eval_limit: int | None = None          # evaluate on the first N images only (quick checks)
    data_root: str | None = None           # folder of the evaluation files (default: Debian's)
    out: str | None = None                 # run directory; default runs/<time>-<recipe>-<bits>
    gate: Gate = Gate()                    # parity gate thresholds (the same defaults as `validate`)
    threads: int | None = None             # torch / ONNX Runtime intra-op threads (None = library default)
    device: str = "auto"                   # where the recipe trains: auto | cpu | cuda | cuda:N (dfq_deploy.device)
    checkpoint_every: int = 50             # training steps between checkpoints (0: only on SIGINT/SIGTERM and at
                                           # stage boundaries; dfq_deploy.checkpoint)
    progress: bool = True

    def __post_init__(self):
        def bad_int(v, low):
            return v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low)

        if bad_int(self.threads, 1):
            raise ConfigError(f"threads={self.threads!r} must be a whole number >= 1", hint="e.g. --threads 2")
        if bad_int(self.eval_limit, 1):
            raise ConfigError(f"eval_limit={self.eval_limit!r} must be a whole number >= 1",
                              hint="e.g. --eval-limit 1000, or leave it out for the whole test split")
        if bad_int(self.checkpoint_every, 0):
            raise ConfigError(f"checkpoint_every={self.checkpoint_every!r} must be a whole number >= 0",
                              hint="use --checkpoint-every N (0 = only on SIGINT / SIGTERM and at stage boundaries)")
        if self.threads is not None and self.threads > 1024:
            raise ConfigError(f"threads={self.threads} is past the ceiling of 1024: a typo?", hint="e.g. --threads 2")
        for name in ("out", "teacher", "data_root"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip() or "\0" in value:
                raise ConfigError(f"{name}={value!r} is not a usable path",
                                  hint=f"pass a path, e.g. --{name.replace('_', '-')} DIR")
            try:  # a name that is not valid UTF-8 cannot be written into ONNX metadata, JSON reports or logs
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError(f"the path given as {name} is not valid UTF-8: {value!r}",
                                  hint="use a path whose name is UTF-8 text") from None

    def to_dict(self) -> dict:
        """Plain data (JSON) that :meth:`from_dict` reads back: what ``run.json`` keeps for ``--resume``."""
        d = asdict(self)
        d["recipe_options"] = plain(dict(self.recipe_options))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainExportConfig":
        try:
            d = dict(d)
            d["scheme"] = QuantScheme(**{"portable": False, **d["scheme"]})  # see rundir.load_run
            d["gate"] = Gate(**d["gate"])
            return cls(**d)
        except (TypeError, KeyError) as e:
            raise ConfigError(f"not a train-export configuration: {e}") from e


def plain(d: dict) -> dict:
    """Tuples -> lists, so the recipe YAML reads back with yaml.safe_load."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
