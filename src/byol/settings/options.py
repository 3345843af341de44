"""Option groups several commands share, each defined once: where the data is and how to read
it, the device, the k-NN vote, and torch.compile.  A command's settings class inherits the
groups it takes (``class EvalConfig(KnnOptions, DeviceOption, DataOptions)``)."""
from __future__ import annotations

from dataclasses import dataclass

from ..data import FORMATS
from .mechanism import Settings, option, require

KNN_TEMPERATURE = 0.1  # the k-NN monitor's vote temperature (Wu et al. 2018; the seed tutorial)
MONITOR_K = 200        # and its neighbours on large banks
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's


@dataclass
class DataOptions(Settings):
    """Where the images are and how to read them."""

    data: str | None = option(None, "dataset folder or file: image folder, labels CSV, idx (MNIST), CIFAR, STL-10, "
                              "MedMNIST .npz, .npy; default: Fashion-MNIST from the Debian package "
                              "dataset-fashion-mnist")
    dataset: str | None = option(None, "force the format instead of recognising it", choices=FORMATS)
    images: str | None = option(None, "the folder holding the images a labels CSV names, when it is not the CSV's "
                                "own (DRAC22 ships them apart); default: the CSV's folder")
    image_column: str | None = option(None, "the CSV column naming the images; default: recognised (image, image "
                                      "name, id_code, filename, ...)")
    label_column: str | None = option(None, "the CSV column holding the labels; default: recognised (label, DR "
                                      "grade, diagnosis, level, grade, class, ...)")
    window: tuple[float, ...] | None = option(None, "DICOM window CENTRE,WIDTH in the stored units after rescaling "
                                              "(e.g. 40,400 for CT soft tissue); default: the file's own window")
    strict: bool = option(False, "stop on unreadable image files instead of skipping them with a warning")

    def check(self) -> None:
        super().check()
        require(self.window is None or (len(self.window) == 2 and self.window[1] > 0), "window",
                f"needs CENTRE,WIDTH with a positive width, got {self.window}")

    def read_options(self) -> dict:
        """The keywords ``data.load_dataset`` takes from these settings."""
        return dict(dataset=self.dataset, strict=self.strict, images=self.images, image_column=self.image_column,
                    label_column=self.label_column, window=tuple(self.window) if self.window else None)


@dataclass
class DeviceOption(Settings):
    device: str = option("auto", "cuda, cuda:N, cpu, or auto (cuda when PyTorch sees a GPU)")

    def check(self) -> None:
        super().check()
        require(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device",
                f"must be auto, cpu, cuda or cuda:N, got '{self.device}'")


@dataclass
class KnnOptions(Settings):
    """The weighted k-NN vote (the monitor, ``byol eval knn``, the comparison's k-NN protocol)."""

    knn_k: int | None = option(None, f"neighbours in the k-NN vote; default: √(labelled images), at most {MONITOR_K} "
                               "and at most the smallest class's count")
    knn_temperature: float = option(KNN_TEMPERATURE, "temperature of the vote weights exp(similarity / T)")

    def check(self) -> None:
        super().check()
        require(self.knn_k is None or self.knn_k >= 1, "knn_k", f"must be >= 1, got {self.knn_k}")
        require(self.knn_temperature > 0, "knn_temperature", f"must be positive, got {self.knn_temperature}")


@dataclass
class CompileOptions(Settings):
    """torch.compile of the training step (``byol pretrain``, ``byol bench``)."""

    compile: bool = option(False, "torch.compile the training step: forwards, backward, optimizer and EMA (a minute "
                           "of compiling first; check the gain with byol bench --compile on your machine)")
    compile_mode: str = option("default", "torch.compile's mode with --compile (reduce-overhead: CUDA graphs on a GPU)",
                               choices=COMPILE_MODES)

    def check(self) -> None:
        super().check()
        # a mode given without --compile would silently do nothing
        require(self.compile or self.compile_mode == "default", "compile_mode",
                f"{self.compile_mode} is a mode of --compile, which is off: add --compile")

    def compile_label(self) -> str:
        """How the step runs, for messages: "" eager, ", compiled", ", compiled (MODE)"."""
        if not self.compile:
            return ""
        return ", compiled" + ("" if self.compile_mode == "default" else f" ({self.compile_mode})")
