"""Read a study file, apply ``--set`` overrides, validate everything, and resolve the trial configs.

Every problem is a ``UsageError`` whose one-line message names the file and the key path; nothing here
touches the database or writes files.
"""

from __future__ import annotations

import copy
import json
import math
import stat
import warnings
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

import components
from components.registry import ComponentError, did_you_mean
from harness import limits
from harness.config import StudySpec, TrialConfig
from harness.errors import UsageError, one_line
from harness.preflight import check_trials
from harness.space import Dimension, get_path, grid_cells, set_path
from harness.yamlio import TooLarge, loads

_UNION_TAGS = ("str", "dict[str,any]", "list[any]", "RangeSpec", "int", "float", "bool", "none")


def read_text_file(path: Path, max_bytes: int) -> str:
    """The text of a regular file of at most ``max_bytes`` bytes (a FIFO, a device such as /dev/zero or a
    symlink loop is an error, never read)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as err:
        raise UsageError(f"{path}: cannot open: {err.strerror or err}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path}: is a directory, not a study file")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path}: not a regular file (a pipe, socket or device); give a study file")
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror or err}") from None
    if len(data) > max_bytes:
        raise limits.exceeded("study_file_bytes", len(data), f"{path}: file size (bytes, at least)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file (UTF-8)") from None


def parse_yaml(text: str, where: str) -> Any:
    """YAML with the harness's rules (``harness.yamlio``) and its size limit; errors name ``where``."""
    try:
        return loads(text, max_nodes=limits.limit("yaml_nodes"))
    except TooLarge as err:
        raise UsageError(f"{where}: {err} ({limits.env_var('yaml_nodes')})") from None
    except RecursionError:
        raise UsageError(f"{where}: malformed YAML: nested too deeply") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        place = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise UsageError(f"{where}: malformed YAML: {place}{problem}") from None


def read_yaml(path: Path) -> dict[str, Any]:
    data = parse_yaml(read_text_file(path, limits.limit("study_file_bytes")), str(path))
    if data is None:
        raise UsageError(f"{path}: empty study file")
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a study file is a mapping of keys, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str], path: Path) -> dict[str, Any]:
    """``KEY=VALUE`` with VALUE parsed as YAML; ``search.space.<dotted key>`` keeps its dotted key."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not p for p in key.split(".")):
            raise UsageError(f"{path}: --set {item!r}: expected KEY=VALUE with a dotted key path")
        value = parse_yaml(raw, f"{path}: --set {key}") if raw.strip() else None
        if key.startswith("search.space."):
            space = data.setdefault("search", {}).setdefault("space", {})
            if not isinstance(space, dict):
                raise UsageError(f"{path}: --set {key}: search.space is not a mapping")
            space[key[len("search.space.") :]] = value
        else:
            set_path(data, key, value)
    return data


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return sorted(model.model_fields)


def format_pydantic(err: ValidationError, model: type[BaseModel]) -> tuple[str, str]:
    """(key path, message) of the first error; union alternatives for one key are joined with 'or'."""
    errors = err.errors()

    def clean(loc: tuple) -> tuple:
        return tuple(p for p in loc if not (isinstance(p, str) and (p in _UNION_TAGS or "[" in p)))

    first_loc = clean(errors[0]["loc"])
    # a union alternative that matched the value's type and failed inside it says the most (a range's bad
    # "high", rather than "not a list")
    deeper = [
        e for e in errors if len(clean(e["loc"])) > len(first_loc) and clean(e["loc"])[: len(first_loc)] == first_loc
    ]
    if deeper:
        errors = deeper + [e for e in errors if e not in deeper]
        first_loc = clean(errors[0]["loc"])
    same = [e for e in errors if clean(e["loc"]) == first_loc]
    key = ".".join(str(p) for p in first_loc) or "(top level)"
    if errors[0]["type"] == "extra_forbidden":
        known = _fields_at(model, first_loc)
        hint = did_you_mean(str(first_loc[-1]), known)
        return key, f"unknown key{hint}" + (f" known: {', '.join(known)}" if known else "")
    if errors[0]["type"] == "missing":
        return key, "required key is missing"
    msgs = " or ".join(dict.fromkeys(e["msg"] for e in same))
    got = errors[0].get("input")
    return key, f"{msgs} (got {json.dumps(got, default=str)[:80]})"


def _component_error(section: str, err: ComponentError) -> UsageError:
    key, msg = err.key, err.message
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
        head, sep, rest = msg.partition(": ")
        if sep and head.replace(".", "").replace("_", "").isalnum():
            key, msg = f"{key}.{head}", rest
    return UsageError(f"{section}.{key}: {msg}" if key != "(spec)" else f"{section}: {msg}")


def _fill(spec: Any, family: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """The spec as a mapping, with ``defaults`` added for parameters the component has but the user left
    out (e.g. the dataset's resolution for a schedule)."""
    mapping = {"name": spec} if isinstance(spec, str) else dict(spec)
    cls = components.REGISTRIES[family].get(mapping.get("name"))
    if cls is not None:
        for key, value in defaults.items():
            if key in cls.model_fields and key not in mapping:
                mapping[key] = value
    return mapping


def _resolve_component(section: str, family: str, spec: Any, defaults: dict | None = None) -> dict[str, Any]:
    try:
        return components.validate(family, _fill(spec, family, defaults or {})).to_spec()
    except ComponentError as err:
        raise _component_error(section, err) from None


def resolve(config: dict[str, Any]) -> dict[str, Any]:
    """Validate a trial config and spell out every component parameter (UsageError without file name)."""
    try:
        trial = TrialConfig.model_validate(config)
    except ValidationError as err:
        key, msg = format_pydantic(err, TrialConfig)
        raise UsageError(f"{key}: {msg}") from None
    out = trial.model_dump(mode="json")
    limits.check_config(out)  # before building anything from the values (again below, defaults filled in)
    out["dataset"] = _resolve_component("dataset", "dataset", out["dataset"])
    res = out["dataset"].get("resolution")
    sized = {"resolution": res} if res else {}
    model = _resolve_component("model", "network", out["model"], sized)
    # spell out the preset's values too, so the stored config says what was trained
    preset_values = components.validate("network", model).config()
    out["model"] = {**model, **json.loads(json.dumps(preset_values))}
    diff = out["diffusion"]
    diff["schedule"] = _resolve_component("diffusion.schedule", "schedule", diff["schedule"], sized)
    diff["parametrization"] = _resolve_component(
        "diffusion.parametrization", "parametrization", diff["parametrization"]
    )
    diff["loss"] = _resolve_component("diffusion.loss", "loss", diff["loss"])
    out["eval"]["sampler"] = _resolve_component("eval.sampler", "sampler", out["eval"]["sampler"])
    out["eval"]["fid"], out["eval"]["metrics"] = _resolve_metrics(out["eval"])
    limits.check_config(out)
    return out


def _resolve_metrics(eval_section: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    from harness.metrics import METRICS, FidOptions

    for i, name in enumerate(eval_section["metrics"]):
        if name not in METRICS:
            known = sorted(METRICS)
            raise UsageError(
                f"eval.metrics.{i}: unknown metric {name!r}{did_you_mean(name, known)} known: {', '.join(known)}"
            )
    try:
        fid = FidOptions.model_validate(eval_section["fid"]).model_dump(mode="json")
    except ValidationError as err:
        key, msg = format_pydantic(err, FidOptions)
        raise UsageError(f"eval.fid.{key}: {msg}") from None
    return fid, list(dict.fromkeys(eval_section["metrics"]))


class LoadedStudy:
    """A validated study: the spec, its resolved base config, the search dimensions, the file."""

    def __init__(self, path: Path, spec: StudySpec, base: dict[str, Any], dims: list[Dimension]):
        self.path, self.spec, self.base, self.dims = path, spec, base, dims
        self.notes: list[str] = []

    @property
    def name(self) -> str:
        return self.spec.name

    def trial_config(self, values: dict[str, Any]) -> dict[str, Any]:
        """The resolved config of one trial: the raw base with ``values`` merged in, then resolved."""
        raw = self.spec.base_config()
        for key, value in values.items():
            set_path(raw, key, copy.deepcopy(value))
        return resolve(raw)


def load_study(path: str | Path, overrides: list[str] | None = None) -> LoadedStudy:
    """Read, override, validate and resolve a study file; every search value is checked here, and so is
    what the trials need from this machine (datasets, device; ``harness.preflight``)."""
    path = Path(path)
    data = apply_overrides(read_yaml(path), overrides or [], path)
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as err:
        key, msg = format_pydantic(err, StudySpec)
        raise UsageError(f"{path}: {key}: {msg}") from None
    try:
        base = resolve(spec.base_config())
    except UsageError as err:
        raise UsageError(f"{path}: {err}") from None
    dims, configs = _check_search(path, spec, base)
    loaded = LoadedStudy(path, spec, base, dims)
    loaded.notes = _check_objectives(path, spec, base)
    check_trials(path, configs)
    return loaded


def _check_search(path: Path, spec: StudySpec, base: dict[str, Any]) -> tuple[list[Dimension], list[dict]]:
    """The search dimensions, and the resolved configs of every grid cell (tpe/random: of the base and of
    each probe value); every one of them is validated here."""
    dims = []
    for key, values in spec.search.space.items():
        where = f"{path}: search.space.{key}"
        try:
            get_path(base, key)
        except KeyError:
            raise UsageError(f"{where}: the key is not in the base config (search keys must exist there)") from None
        if isinstance(values, list) and not values:
            raise UsageError(f"{where}: empty list of values")
        try:
            dim = Dimension(key, values)
            if spec.search.sampler == "grid":
                dim.check_grid()
        except ValueError as err:
            raise UsageError(f"{where}: {err}") from None
        dims.append(dim)
    if spec.search.sampler != "grid" and spec.search.n_trials is None:
        raise UsageError(f"{path}: search.n_trials: required for the {spec.search.sampler} sampler")
    limits.check("trials", spec.search.n_trials, f"{path}: search.n_trials")
    probe = LoadedStudy(path, spec, base, dims)
    configs = [base]
    for dim in dims:
        for value in dim.probe_values():
            try:
                configs.append(probe.trial_config({dim.key: value}))
            except UsageError as err:
                shown = json.dumps(value, default=str)
                raise UsageError(f"{path}: search.space.{dim.key}: value {shown} is invalid: {err}") from None
    if spec.search.sampler == "grid":
        cells = math.prod(dim.size() for dim in dims)
        limits.check("trials", cells, f"{path}: search.space (grid cells, the product of the axes' sizes)")
        configs = []
        for cell in grid_cells(dims):
            try:
                configs.append(probe.trial_config(cell))
            except UsageError as err:
                raise UsageError(
                    f"{path}: search.space: the combination {json.dumps(cell)} is invalid: {err}"
                ) from None
    return dims, configs


def _check_objectives(path: Path, spec: StudySpec, base: dict[str, Any]) -> list[str]:
    """Objectives must be produced by the enabled metrics; FID/KID objectives need weights. Returns the
    notes the metrics' preflight raised as warnings (e.g. FID will be unavailable)."""
    from harness.metrics import METRICS, FidOptions, preflight

    produced = {"val_loss", "train_loss"}
    for name in base["eval"]["metrics"]:
        produced |= set(METRICS[name].outputs)
    for i, obj in enumerate(spec.objectives):
        if obj.metric not in produced and not any(obj.metric.startswith(p + "_") for p in ("swd",)):
            known = sorted(produced)
            raise UsageError(
                f"{path}: objectives.{i}.metric: {obj.metric!r} is not produced by eval.metrics"
                f"{did_you_mean(obj.metric, known)} produced: {', '.join(known)}"
            )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            preflight(base["eval"]["metrics"], FidOptions(**base["eval"]["fid"]), [o.metric for o in spec.objectives])
        except ValueError as err:
            raise UsageError(f"{path}: objectives: {err}") from None
    return [one_line(str(w.message)) for w in caught]
