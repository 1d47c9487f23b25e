"""Check an API-format graph the way ComfyUI 0.3.64 does at `POST /prompt`, with its exact error shapes.

`validate_prompt(graph, object_info, input_dir)` answers `(True, None)` or `(False, body)` where `body`
is what the real server sends with HTTP 400: `{"error": {...}, "node_errors": {...}}`. The node schemas
come from a `GET /object_info` dump, so tests can check a bundled workflow against the real schemas
without a ComfyUI. `check_prompt` gives the whole result (accepted outputs, per-node errors, the graph
with its widget values coerced to INT/FLOAT/STRING/BOOLEAN as ComfyUI stores it in the queue).

Rules reproduced (from the recordings in the real server's answers and its execution.py):
- every node needs a known `class_type`, else `invalid_prompt` naming the first bad node;
- output nodes are the classes with `output_node: true`; none -> `prompt_no_outputs`;
- from each output, inputs are checked depth first (inputs in schema order, a linked node before the
  node that uses it); a node with a failing upstream is invalid but carries no errors of its own;
- a link to a missing node or slot raises, reported as `exception_during_validation` on the output;
- `_meta` and inputs the schema does not know are ignored; hidden inputs are not checked;
- LoadImage / LoadImageMask skip the combo check for `image` and instead require the file to exist
  (`custom_validation_failed`, `image - Invalid image file: NAME`), as their VALIDATE_INPUTS does;
  LoadVideo (`file`) and LoadAudio (`audio`) likewise.
"""
from __future__ import annotations

import copy
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

Graph = dict[str, Any]
ObjectInfo = dict[str, Any]
Reason = dict[str, Any]

COMBO_LIMIT = 20  # longer choice lists are summarised, as ComfyUI does for big model folders


@dataclass
class Dirs:
    """Where annotated file names ("x.png [output]") resolve; input is the default."""
    input: Path
    output: Path | None = None
    temp: Path | None = None

    def resolve(self, name: str) -> Path:
        for suffix, base in ((" [output]", self.output), (" [input]", self.input), (" [temp]", self.temp)):
            if name.endswith(suffix) and base is not None:
                return base / name[: -len(suffix)]
        return self.input / name


def _image_file_exists(value: Any, dirs: Dirs) -> bool | str:
    """LoadImage's own check: the named file must exist (a path relative to the input folder)."""
    if not (dirs.resolve(str(value))).exists():
        return f"Invalid image file: {value}"
    return True


def _file_exists(kind: str) -> Callable[[Any, Dirs], bool | str]:
    """LoadVideo's and LoadAudio's own checks, worded as theirs (comfy_extras/nodes_video.py, nodes_audio.py)."""
    def check(value: Any, dirs: Dirs) -> bool | str:
        return True if dirs.resolve(str(value)).exists() else f"Invalid {kind} file: {value}"
    return check


# class_type -> (input names the node checks itself, the check). Such inputs skip min/max/combo.
CUSTOM_VALIDATORS: dict[str, tuple[tuple[str, ...], Callable[[Any, Dirs], bool | str]]] = {
    "LoadImage": (("image",), _image_file_exists),
    "LoadImageMask": (("image",), _image_file_exists),
    "LoadVideo": (("file",), _file_exists("video")),
    "LoadAudio": (("audio",), _file_exists("audio")),
}


@dataclass
class Validation:
    """Everything ComfyUI decides at `POST /prompt`."""
    ok: bool
    error: dict[str, Any] | None
    node_errors: dict[str, Any]
    outputs: list[str]  # output nodes that passed, which are the ones that will run
    prompt: Graph = field(default_factory=dict)  # the graph with coerced widget values

    def body(self) -> dict[str, Any] | None:
        """The HTTP 400 body, or None when the prompt is accepted."""
        if self.ok:
            return None
        return {"error": self.error, "node_errors": self.node_errors}


def full_type_name(exc: BaseException) -> str:
    """`KeyError` for builtins, `module.Class` otherwise, like ComfyUI's exception_type."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def input_spec(schema: dict[str, Any], name: str) -> tuple[Any, str | None, dict[str, Any]]:
    """(type, category, options) of one input; type is a list of choices for a classic combo."""
    for category in ("required", "optional", "hidden"):
        section = schema.get("input", {}).get(category) or {}
        if name in section:
            info = section[name]
            if isinstance(info, str):  # hidden inputs are bare strings ("PROMPT")
                return info, category, {}
            extra = info[1] if len(info) > 1 and isinstance(info[1], dict) else {}
            return info[0], category, extra
    return None, None, {}


def checked_inputs(schema: dict[str, Any]) -> list[str]:
    """Required then optional input names, in the schema's widget order."""
    order = schema.get("input_order") or {}
    names: list[str] = []
    for category in ("required", "optional"):
        section = schema.get("input", {}).get(category) or {}
        listed = [n for n in order.get(category, []) if n in section]
        names += listed + [n for n in section if n not in listed]
    return names


def types_match(received: Any, wanted: Any) -> bool:
    """ComfyUI's link type check: equal, `*`, or overlapping comma-separated type lists."""
    if received == wanted or received == "*" or wanted == "*":
        return True
    if not isinstance(received, str) or not isinstance(wanted, str):
        return False
    have = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in wanted.split(",")}
    return bool(have & want)


class _Validator:
    """One validation pass over one graph; `validated` memoises each node's verdict."""

    def __init__(self, prompt: Graph, object_info: ObjectInfo, dirs: Dirs) -> None:
        self.prompt = prompt
        self.object_info = object_info
        self.dirs = dirs
        self.validated: dict[str, tuple[bool, list[Reason], str]] = {}
        self.in_progress: set[str] = set()

    def node(self, unique_id: str) -> tuple[bool, list[Reason], str]:
        if unique_id in self.validated:
            return self.validated[unique_id]
        if unique_id in self.in_progress:
            raise RecursionError("maximum recursion depth exceeded")
        self.in_progress.add(unique_id)
        try:
            return self._node(unique_id)
        finally:
            self.in_progress.discard(unique_id)

    def _node(self, unique_id: str) -> tuple[bool, list[Reason], str]:
        inputs = self.prompt[unique_id]["inputs"]
        class_type = self.prompt[unique_id]["class_type"]
        schema = self.object_info[class_type]
        self_checked, custom_check = CUSTOM_VALIDATORS.get(class_type, ((), None))
        errors: list[Reason] = []
        valid = True

        for name in checked_inputs(schema):
            input_type, category, extra = input_spec(schema, name)
            if name not in inputs:
                if category == "required":
                    errors.append({"type": "required_input_missing", "message": "Required input is missing",
                                   "details": f"{name}", "extra_info": {"input_name": name}})
                continue
            value = inputs[name]
            config = [input_type, extra]
            if isinstance(value, list):
                reason, upstream_ok = self._link(name, value, input_type, config)
                if reason is not None:
                    errors.append(reason)
                if not upstream_ok:
                    valid = False
                continue
            reason = self._widget(inputs, name, value, input_type, extra, config, name in self_checked)
            if reason is not None:
                errors.append(reason)

        if custom_check is not None:
            for name in self_checked:
                if name not in inputs or isinstance(inputs[name], list):
                    continue
                verdict = custom_check(inputs[name], self.dirs)
                if verdict is not True:
                    details = name if verdict is False else f"{name} - {verdict}"
                    errors.append({"type": "custom_validation_failed",
                                   "message": "Custom validation failed for node",
                                   "details": details, "extra_info": {"input_name": name}})

        verdict = (False, errors, unique_id) if errors or not valid else (True, [], unique_id)
        self.validated[unique_id] = verdict
        return verdict

    def _link(self, name: str, value: list, input_type: Any, config: list) -> tuple[Reason | None, bool]:
        """Check one `[node_id, slot]` input: (error or None, whether the upstream node is valid)."""
        if len(value) != 2:
            return ({"type": "bad_linked_input",
                     "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                     "details": f"{name}",
                     "extra_info": {"input_name": name, "input_config": config, "received_value": value}}, True)
        from_id, slot = value
        from_class = self.prompt[from_id]["class_type"]  # KeyError for a missing node, as in ComfyUI
        received = tuple(self.object_info[from_class]["output"])[slot]  # IndexError for a bad slot
        if not types_match(received, input_type):
            return ({"type": "return_type_mismatch", "message": "Return type mismatch between linked nodes",
                     "details": f"{name}, received_type({received}) mismatch input_type({input_type})",
                     "extra_info": {"input_name": name, "input_config": config, "received_type": received,
                                    "linked_node": value}}, True)
        try:
            upstream = self.node(from_id)
        except Exception as ex:  # noqa: BLE001 - ComfyUI reports any exception of an inner node
            self.validated[from_id] = (False, [{
                "type": "exception_during_inner_validation",
                "message": "Exception when validating inner node",
                "details": str(ex),
                "extra_info": {"input_name": name, "input_config": config, "exception_message": str(ex),
                               "exception_type": full_type_name(ex),
                               "traceback": traceback.format_tb(ex.__traceback__), "linked_node": value},
            }], from_id)
            return None, False
        return None, upstream[0]

    def _widget(self, inputs: dict[str, Any], name: str, value: Any, input_type: Any,
                extra: dict[str, Any], config: list, self_checked: bool) -> Reason | None:
        """Coerce a constant to its declared type, then check min, max and the choice list."""
        try:
            if isinstance(value, dict) and "__value__" in value:
                value = inputs[name] = value["__value__"]
            converter = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}.get(
                input_type if isinstance(input_type, str) else "")
            if converter is not None:
                value = inputs[name] = converter(value)
        except Exception as ex:  # noqa: BLE001 - int()/float() raise ValueError or TypeError
            return {"type": "invalid_input_type",
                    "message": f"Failed to convert an input value to a {input_type} value",
                    "details": f"{name}, {value}, {ex}",
                    "extra_info": {"input_name": name, "input_config": config, "received_value": value,
                                   "exception_message": str(ex)}}
        if self_checked:
            return None
        if "min" in extra and value < extra["min"]:
            return {"type": "value_smaller_than_min",
                    "message": "Value {} smaller than min of {}".format(value, extra["min"]),
                    "details": f"{name}",
                    "extra_info": {"input_name": name, "input_config": config, "received_value": value}}
        if "max" in extra and value > extra["max"]:
            return {"type": "value_bigger_than_max",
                    "message": "Value {} bigger than max of {}".format(value, extra["max"]),
                    "details": f"{name}",
                    "extra_info": {"input_name": name, "input_config": config, "received_value": value}}
        if isinstance(input_type, list) or input_type == "COMBO":
            options = input_type if isinstance(input_type, list) else extra.get("options", [])
            if value not in options:
                shown: list | None = config
                listing = str(options)
                if len(options) > COMBO_LIMIT:
                    listing, shown = f"(list of length {len(options)})", None
                return {"type": "value_not_in_list", "message": "Value not in list",
                        "details": f"{name}: '{value}' not in {listing}",
                        "extra_info": {"input_name": name, "input_config": shown, "received_value": value}}
        return None


def check_prompt(graph: Any, object_info: ObjectInfo, input_dir: str | Path, *,
                 output_dir: str | Path | None = None, temp_dir: str | Path | None = None,
                 partial_execution_targets: list[str] | None = None) -> Validation:
    """Validate a copy of `graph`; the copy (with coerced values) is in the result's `prompt`."""
    prompt = copy.deepcopy(graph)
    dirs = Dirs(Path(input_dir), Path(output_dir) if output_dir else None, Path(temp_dir) if temp_dir else None)

    outputs: list[str] = []
    for node_id in prompt:
        node = prompt[node_id]
        if "class_type" not in node:
            return Validation(False, _prompt_error("invalid_prompt",
                              "Cannot execute because a node is missing the class_type property.",
                              f"Node ID '#{node_id}'"), {}, [], prompt)
        class_type = node["class_type"]
        if class_type not in object_info:
            return Validation(False, _prompt_error("invalid_prompt",
                              f"Cannot execute because node {class_type} does not exist.",
                              f"Node ID '#{node_id}'"), {}, [], prompt)
        if object_info[class_type].get("output_node") is True:
            if partial_execution_targets is None or node_id in partial_execution_targets:
                outputs.append(node_id)
    if not outputs:
        return Validation(False, _prompt_error("prompt_no_outputs", "Prompt has no outputs", ""), {}, [], prompt)

    validator = _Validator(prompt, object_info, dirs)
    good: list[str] = []
    failed: list[tuple[str, list[Reason]]] = []
    node_errors: dict[str, Any] = {}
    for output in outputs:
        try:
            valid, reasons, _ = validator.node(output)
        except Exception as ex:  # noqa: BLE001 - e.g. KeyError for a link to a missing node
            valid = False
            reasons = [{"type": "exception_during_validation", "message": "Exception when validating node",
                        "details": str(ex),
                        "extra_info": {"exception_type": full_type_name(ex),
                                       "traceback": traceback.format_tb(sys.exc_info()[2])}}]
            validator.validated[output] = (False, reasons, output)
        if valid is True:
            good.append(output)
            continue
        failed.append((output, reasons))
        # Like ComfyUI: every node seen so far with its own errors gets this output as dependent.
        for node_id, (node_ok, node_reasons, _) in validator.validated.items():
            if node_ok is not True and node_reasons:
                entry = node_errors.setdefault(node_id, {"errors": node_reasons, "dependent_outputs": [],
                                                         "class_type": prompt[node_id]["class_type"]})
                entry["dependent_outputs"].append(output)

    if not good:
        details = "\n".join(f"{r['message']}: {r['details']}" for _, reasons in failed for r in reasons)
        return Validation(False, _prompt_error("prompt_outputs_failed_validation",
                                               "Prompt outputs failed validation", details),
                          node_errors, [], prompt)
    return Validation(True, None, node_errors, good, prompt)


def validate_prompt(graph: Any, object_info: ObjectInfo, input_dir: str | Path,
                    **kwargs: Any) -> tuple[bool, dict[str, Any] | None]:
    """(True, None) when ComfyUI would queue `graph`, else (False, its HTTP 400 body)."""
    result = check_prompt(graph, object_info, input_dir, **kwargs)
    return result.ok, result.body()


def _prompt_error(kind: str, message: str, details: str) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}
