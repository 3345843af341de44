"""``byol`` command line: parse, build the config, call the public API.  Nothing else."""
from __future__ import annotations

import argparse
import dataclasses
import sys

from .config import PretrainConfig, UserError, resolve_config


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    for field in dataclasses.fields(PretrainConfig):
        flag = "--" + field.name.replace("_", "-")
        help_text = f"{field.metadata['help']} [default: {field.default}]"
        if "bool" in str(field.type):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            parser.add_argument(flag, default=argparse.SUPPRESS, metavar=field.name.upper(), help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="byol", description="BYOL self-supervised pre-training (Grill et al. 2020).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    pretrain = commands.add_parser(
        "pretrain", help="pre-train an encoder on unlabeled images",
        description="Pre-train with BYOL. Settings: defaults (the CPU preset on Fashion-MNIST), then --config "
                    "YAML, then flags. Ends with k-NN and linear-probe accuracy when the data has labels.")
    pretrain.add_argument("--config", metavar="YAML", help="settings file (see configs/); flags override it")
    _add_config_options(pretrain)

    evaluate = commands.add_parser(
        "eval", help="score a frozen encoder: k-NN vote or linear probe",
        description="Frozen-encoder evaluation (BYOL §4.1) on a labelled dataset's train and test splits: "
                    "top-1, top-5, balanced accuracy, macro-F1, quadratic weighted kappa, per-class accuracy, "
                    "confusion matrix.")
    evaluate.add_argument("method", choices=("knn", "linear"), help="knn: weighted cosine vote; linear: "
                          "logistic regression, L2 chosen on a validation split of the training set")
    evaluate.add_argument("--init", required=True, help="random | byol:RUN_DIR | a run directory | weights file "
                          "(.safetensors from byol, or a torchvision .pth state dict of --arch)")
    evaluate.add_argument("--data", help="labelled dataset (see byol pretrain --help); default: Fashion-MNIST")
    evaluate.add_argument("--arch", default="narrow_resnet", help="encoder for random init or a .pth state dict "
                          "[default: narrow_resnet]; byol weights carry their own")
    evaluate.add_argument("--image-size", type=int, help="side the images are evaluated at; default: the dataset's")
    evaluate.add_argument("--out", help="folder for eval-METHOD.csv and eval-METHOD.md (e.g. the run directory)")
    evaluate.add_argument("--device", default="auto", help="cuda, cpu or auto [default: auto]")
    evaluate.add_argument("--knn-k", type=int, default=200, help="neighbours in the vote [default: 200]")
    evaluate.add_argument("--knn-temperature", type=float, default=0.1, help="vote temperature [default: 0.1]")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of random init and of the probe's validation split [default: 0]")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    try:
        if command == "pretrain":
            from .train import pretrain

            yaml_path = args.pop("config", None)
            config = resolve_config(yaml_path, args)
            pretrain(config, given_options=set(args))
        elif command == "eval":
            from .evaluate import evaluate_encoder

            evaluate_encoder(**args)
    except UserError as error:
        print(f"byol {command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"byol {command}: interrupted; the last finished epoch is in checkpoints/last.pt "
              "(continue with --resume)", file=sys.stderr)
        return 130
    return 0
