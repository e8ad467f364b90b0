"""Model zoos as model sources: ``robustbench:NAME`` and ``hf-hub:ORG/NAME``.

Both return an :class:`advkit.models.ImageClassifier` that keeps the zoo's own
input handling: RobustBench models normalize inside (as RobustBench defines
them), so advkit adds none; timm hub models get the mean/std of their
``pretrained_cfg``. RobustBench checkpoints are downloaded only with
``download=true``; hub models come from the local cache (offline with
``HF_HUB_OFFLINE=1``). When the files are missing, the error says where they go.

RobustBench. The ``robustbench`` package is used when it imports. The 1.1.1
release on PyPI does not import on a plain install (it needs ``pkg_resources``
and the official ``autoattack`` package, which is not on PyPI); without it,
advkit reads RobustBench's on-disk layout itself
(``MODEL_DIR/<dataset>/<threat_model>/<NAME>.pt``) into the architecture named
by ``arch=`` (a registered backbone), with RobustBench's key clean-up (the
``state_dict`` entry, ``module.``/``model.`` prefixes). That loader is
advkit's own because there is no importable library for it.
"""

from __future__ import annotations

from pathlib import Path

# advkit dataset name -> (RobustBench dataset, threat model forced by the data or None)
RB_DATASETS = {
    "cifar10": ("cifar10", None),
    "cifar100": ("cifar100", None),
    "imagenet": ("imagenet", None),
    "cifar10-c": ("cifar10", "corruptions"),
    "cifar100-c": ("cifar100", "corruptions"),
    "imagenet-c": ("imagenet", "corruptions"),
}
RB_SHAPES = {"cifar10": (10, (3, 32, 32)), "cifar100": (100, (3, 32, 32)), "imagenet": (1000, (3, 224, 224))}
RB_THREATS = ("Linf", "L2", "corruptions")
RB_DEFAULT_DIR = "./models"  # robustbench.utils.load_model's default model_dir


def _rb_target(dataset: str, norm: str, threat_model: str) -> tuple[str, str]:
    from advkit.plugin import UserError

    base = (dataset or "cifar10").split(":")[0].lower()
    if base not in RB_DATASETS:
        raise UserError(f"RobustBench has models for {', '.join(sorted(RB_DATASETS))}, not the dataset {dataset!r}")
    rb_dataset, forced = RB_DATASETS[base]
    threat = threat_model or forced or norm or "Linf"
    if threat not in RB_THREATS:
        raise UserError(f"RobustBench threat model must be one of {', '.join(RB_THREATS)}, not {threat!r}")
    return rb_dataset, threat


def _robustbench_package():
    """The importable ``robustbench`` package, or None (absent, or broken as 1.1.1 is on a plain install)."""
    try:
        import robustbench.utils  # noqa: F401
        from robustbench.model_zoo import model_dicts  # noqa: F401
    except Exception:
        return None
    import robustbench

    return robustbench


def _rb_files(model_dir: Path, rb_dataset: str, threat: str, name: str, entry: dict | None) -> list[Path]:
    base = model_dir / rb_dataset / threat / f"{name}.pt"
    if entry is not None and isinstance(entry.get("gdrive_id"), list):  # ensembles: NAME.pt_m0.pt, ...
        return [Path(f"{base}_m{i}.pt") for i in range(len(entry["gdrive_id"]))]
    return [base]


def _missing_line(name: str, files: list[Path], rb_dataset: str, threat: str) -> str:
    shown = ", ".join(str(f) for f in files)
    return (f"robustbench:{name} ({rb_dataset}, {threat}) is not on disk: put the checkpoint at {shown} "
            f"(RobustBench's layout MODEL_DIR/{rb_dataset}/{threat}/{name}.pt), or pass "
            f"robustbench:{name}:model_dir=DIR (download=true fetches it when online)")


def robustbench_model(name: str, dataset: str = "cifar10", norm: str = "Linf", threat_model: str = "",
                      model_dir: str = RB_DEFAULT_DIR, arch: str = "", download: bool = False):
    """A RobustBench model zoo entry: --model robustbench:NAME (model_dir=, threat_model=, download=; arch= reads the file without the package)"""
    from advkit.plugin import ImageClassifier, UserError

    rb_dataset, threat = _rb_target(dataset, norm, threat_model)
    num_classes, shape = RB_SHAPES[rb_dataset]
    package = None if arch else _robustbench_package()
    if package is not None:
        net, files, loader = _load_with_package(package, name, rb_dataset, threat, Path(model_dir), download)
        rebuild, rebuild_params = "robustbench-arch", {"name": name, "dataset": rb_dataset, "threat_model": threat}
    elif arch:
        net, files, loader = _load_layout(name, rb_dataset, threat, Path(model_dir), arch, num_classes, shape)
        rebuild, rebuild_params = arch, {}
    else:
        raise UserError(f"robustbench:{name}: the robustbench package does not import here (robustbench 1.1.1 "
                        f"needs setuptools<81 and the official autoattack); install both, or name the "
                        f"architecture to load RobustBench's file into: robustbench:{name}:arch=BACKBONE")
    c = shape[0]
    model = ImageClassifier(net, [0.0] * c, [1.0] * c, num_classes=num_classes, input_shape=shape, arch=rebuild,
                            arch_params=rebuild_params)
    model.info["zoo"] = {"source": "robustbench", "name": name, "dataset": rb_dataset, "threat_model": threat,
                         "files": [str(f) for f in files], "loader": loader,
                         "normalization": "inside the model, as RobustBench defines it"}
    return model


def _load_with_package(package, name: str, rb_dataset: str, threat: str, model_dir: Path, download: bool):
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from robustbench.utils import load_model

    from advkit.plugin import UserError, unknown

    entries = model_dicts[BenchmarkDataset(rb_dataset)][ThreatModel(threat)]
    if name not in entries:
        raise unknown("backbone", f"robustbench:{name}", [f"robustbench:{n}" for n in entries])
    import timm

    hosted = timm.is_model(f"{name.lower().replace('-', '_')}_{rb_dataset}_{threat.lower()}")  # weights on the HF hub
    files = [] if hosted else _rb_files(model_dir, rb_dataset, threat, name, entries[name])
    if not download and not all(f.is_file() for f in files):
        raise UserError(_missing_line(name, files, rb_dataset, threat))
    try:
        net = load_model(name, model_dir=str(model_dir), dataset=rb_dataset, threat_model=threat)
    except Exception as exc:  # downloads and checkpoint formats fail in many ways
        raise UserError(f"robustbench:{name}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    return net, files, f"robustbench {getattr(package, '__version__', '')}".strip()


def _load_layout(name: str, rb_dataset: str, threat: str, model_dir: Path, arch: str, num_classes: int, shape):
    """RobustBench's file layout read by advkit into a registered backbone (no robustbench package)."""
    from advkit.plugin import UserError, apply_weights, build_backbone, load_weights_file

    files = _rb_files(model_dir, rb_dataset, threat, name, None)
    if not files[0].is_file():
        raise UserError(_missing_line(name, files, rb_dataset, threat))
    net = build_backbone(arch, num_classes, shape)
    state = {_strip(k): v for k, v in load_weights_file(files[0]).items()}
    apply_weights(net, state, str(files[0]))
    return net, files, f"advkit reader of RobustBench's layout into {arch}"


def _strip(key: str) -> str:
    for prefix in ("module.", "model."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def robustbench_arch(name: str, dataset: str = "cifar10", threat_model: str = "Linf"):
    """A RobustBench architecture without its weights (rebuilds checkpoints made from robustbench:NAME)"""
    from advkit.plugin import UserError

    package = _robustbench_package()
    if package is None:
        raise UserError("rebuilding a RobustBench architecture needs the robustbench package")
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat_model)][name]["model"]()


def hf_hub_model(name: str, cache_dir: str = ""):
    """A timm model with its weights from the Hugging Face hub (or the local cache offline): --model hf-hub:ORG/NAME"""
    import timm

    from advkit.plugin import ImageClassifier, UserError

    if name.count("/") != 1 or not all(name.split("/")):
        raise UserError(f"hf-hub:{name}: expected hf-hub:ORG/NAME (a timm model repository on the hub)")
    _reachable_or_cached(name, cache_dir or None)
    try:
        net = timm.create_model(f"hf-hub:{name}", pretrained=True, cache_dir=cache_dir or None)
    except Exception as exc:  # offline, missing files and bad repositories surface as many exception types
        raise UserError(_hub_line(name, exc)) from None
    cfg = dict(getattr(net, "pretrained_cfg", None) or {})
    shape = tuple(cfg.get("input_size") or (3, 224, 224))
    c = shape[0]
    mean = list(cfg.get("mean") or [0.0] * c)
    std = list(cfg.get("std") or [1.0] * c)
    model = ImageClassifier(net, mean, std, num_classes=int(net.num_classes), input_shape=shape, arch="timm",
                            arch_params={"name": cfg.get("architecture", "")})
    model.info["zoo"] = {"source": "hf-hub", "name": name, "architecture": cfg.get("architecture", ""),
                         "normalization": f"mean={mean}, std={std} from the model's pretrained_cfg"}
    return model


def _reachable_or_cached(name: str, cache_dir) -> None:
    """Refuse at once (instead of after the hub client's retries) a repository that is neither in the local
    cache nor reachable: one request with a 5-second timeout decides."""
    from huggingface_hub import constants, try_to_load_from_cache

    from advkit.plugin import UserError

    if isinstance(try_to_load_from_cache(name, "config.json", cache_dir=cache_dir), str) or constants.HF_HUB_OFFLINE:
        return  # cached (the load reads it), or offline (the load says so without a network attempt)
    try:
        from huggingface_hub import model_info

        model_info(name, timeout=5)
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"hf-hub:{name} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and the "
                        f"hub cannot be reached ({type(exc).__name__}: {first}): run 'hf download {name}' where "
                        f"there is network and copy the cache here") from None


def _hub_line(name: str, exc: Exception) -> str:
    from huggingface_hub import constants, errors

    where = constants.HF_HUB_CACHE
    missing = (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, errors.EntryNotFoundError,
               errors.RepositoryNotFoundError)
    if isinstance(exc, missing) and constants.HF_HUB_OFFLINE:
        return (f"hf-hub:{name} is not in the local Hugging Face cache ({where}) and HF_HUB_OFFLINE is set: "
                f"download it where there is network (hf download {name}) and copy the cache here")
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"hf-hub:{name}: cannot load it from the hub or the cache {where} ({type(exc).__name__}: {first})"
