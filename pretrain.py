"""Train a recursive reasoning model: compose the Hydra config, validate it, train.

    python pretrain.py --config-name cfg_lsa_cpu            # 4x4 LSA on a laptop CPU, minutes
    python pretrain.py --config-name cfg_lsa                # 9x9 LSA, compiled bf16 on a GPU
    python pretrain.py --config-name cfg_lsa train.max_train_seconds=400 arch=trm_mlp

Known bad input (config, dataset, checkpoint) ends with one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from dataset.common import InputError
from training.config import validate_config


@hydra.main(config_path="config", config_name="cfg_lsa", version_base=None)
def main(hydra_cfg: DictConfig) -> None:
    from training.loop import TrainingDiverged, train  # after Hydra parsed argv: keeps --help fast

    try:
        cfg = validate_config(OmegaConf.to_container(hydra_cfg, resolve=True))
        result = train(cfg)
    except (InputError, TrainingDiverged) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps({k: v for k, v in result.items()}))


if __name__ == "__main__":
    main()
