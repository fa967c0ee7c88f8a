"""The settings of one ``train-export`` run, as ``run.json`` keeps them for ``--resume``."""

from __future__ import annotations

from dataclasses import asdict, field
from typing import Annotated, ClassVar

from pydantic import BeforeValidator, Field, InstanceOf

from ..config import Count, Flag, UsablePath, config_class, not_a_flag
from ..errors import ConfigError
from ..quant import QuantScheme
from ..validate.gate import Gate


@config_class
class TrainExportConfig:
    # hints name the command-line option (--threads) rather than --set KEY=VALUE
    cli_options: ClassVar[bool] = True

    target: str = "onnxruntime"            # runtime the model is deployed to (chooses the export profile)
    teacher: UsablePath | None = None      # model card .json; None = the teacher shipped with dfq-deploy
    recipe: str = "ptq"                    # data-free recipe name (dfq_deploy.recipes.RECIPES; DEFAULT_RECIPE)
    recipe_options: dict = field(default_factory=dict)   # overrides of the recipe's config fields
    scheme: InstanceOf[QuantScheme] = QuantScheme()      # bit widths of the student (validated by QuantScheme)
    eval_data: str = "fashion-mnist"       # evaluation set, never used for training: fashion-mnist, imagefolder:PATH
                                           # (labelled when its folders are the card's classes) or synthetic (no
                                           # labels: parity is checked, accuracy is not measured)
    # evaluate on the first N images only (quick checks); bounds in one Field: inside `X | None` they do not merge
    eval_limit: Annotated[int, BeforeValidator(not_a_flag), Field(ge=1)] | None = None
    data_root: UsablePath | None = None    # folder of the evaluation files (default: Debian's)
    out: UsablePath | None = None          # run directory; default runs/<time>-<recipe>-<bits>
    gate: InstanceOf[Gate] = Gate()        # parity gate thresholds (the same defaults as `validate`)
    # torch / ONNX Runtime intra-op threads (None = the library's default)
    threads: Annotated[int, BeforeValidator(not_a_flag), Field(ge=1, le=1024)] | None = None
    device: str = "auto"                   # where the recipe trains: auto | cpu | cuda | cuda:N (dfq_deploy.device)
    checkpoint_every: Count = 50           # training steps between checkpoints (0: only on SIGINT/SIGTERM and at
                                           # stage boundaries; dfq_deploy.checkpoint)
    progress: Flag = True

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
