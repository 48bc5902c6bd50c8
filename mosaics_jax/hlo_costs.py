"""What each op of a compiled XLA program costs: bytes it moves and FLOPs it does, from the
optimized module's text (``compiled.as_text()``), with loops multiplied out.

``compiled.cost_analysis()`` gives the whole program's totals and counts a loop's body once;
a performance engineer asks which ops those bytes and FLOPs come from. Here every op the
program runs between memories (a fusion, a matmul, a copy, a collective, a custom call; the
ops inside a fusion stay in registers and caches) is costed as XLA's own cost analysis does
it, in simplified form:

  * bytes: its operands' sizes plus its result's, but only the slice of a buffer that a
    ``dynamic-slice`` reads and the update that a ``dynamic-update-slice`` writes in place;
  * FLOPs: 2 M N K for each matmul (per output element, twice the contracted size), one per
    output element of each arithmetic op (transcendentals apart, as XLA counts them), one per
    input element of a reduction, summed over the fused computation; a custom call (a Mosaic
    kernel) counts none here (the compile report counts kernels from their block masks);
  * an op inside a ``while`` loop (gradient accumulation, scanned blocks, ``lax.map``) counts
    as many times as the loop's known trip count (1 where XLA does not know it).

The sums come within a few percent of ``cost_analysis`` on loop-free programs
(tests/test_hlo_costs.py); what they are for is the ranking (``top``).
"""

from __future__ import annotations

import dataclasses
import math
import re

_BYTES = {"pred": 1, "s4": 1, "u4": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
          "bf16": 2, "f16": 2, "s16": 2, "u16": 2, "f32": 4, "s32": 4, "u32": 4, "f64": 8,
          "s64": 8, "u64": 8, "c64": 8, "c128": 16, "token": 0}
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%(\S+) \(.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (.+?) ([a-z][a-z0-9-]*)\((.*)$")
_FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all",
         "partition-id", "replica-id", "iota", "opt-barrier"}
# What XLA counts as a FLOP per output element (transcendentals, such as exp, it counts apart).
_ARITHMETIC = {"add", "subtract", "multiply", "divide", "maximum", "minimum", "negate", "abs",
               "remainder", "sign", "floor", "ceil", "round-nearest-afz", "round-nearest-even",
               "compare", "select", "clamp", "and", "or", "xor", "not"}


@dataclasses.dataclass(frozen=True)
class OpCost:
  """One op of the program: ``count`` runs (loop trips) of ``bytes`` and ``flops`` each."""

  name: str  # the HLO instruction
  kind: str  # opcode, with a fusion's kind or a custom call's target
  source: str  # the JAX operation it came from (op_name metadata), shortened
  part: str  # the part of the model it belongs to (``part``)
  bytes: float  # per run
  flops: float  # per run
  count: int

  @property
  def total_bytes(self) -> float:
    return self.bytes * self.count

  @property
  def total_flops(self) -> float:
    return self.flops * self.count


@dataclasses.dataclass
class _Instruction:
  name: str
  shape: str
  opcode: str
  operands: list[str]
  attributes: str
  inside: str = ""  # the text between the opcode's parentheses (a constant's value)
  root: bool = False


def _elements(shape: str) -> list[tuple[str, int]]:
  """(dtype, element count) of each array in a (possibly tuple) shape."""
  return [(dtype, math.prod(int(d) for d in dims.split(",") if d))
          for dtype, dims in _ARRAY.findall(shape) if dtype in _BYTES]


def _size(shape: str) -> int:
  return sum(_BYTES[dtype] * count for dtype, count in _elements(shape))


def _dims(shape: str) -> list[int]:
  found = _ARRAY.search(shape)
  return [int(d) for d in found.group(2).split(",") if d] if found else []


def _split_call(rest: str) -> tuple[str, str]:
  """'%a, %b), attr=...' -> ('%a, %b', 'attr=...')."""
  depth, end = 1, len(rest)
  for index, char in enumerate(rest):
    depth += {"(": 1, ")": -1}.get(char, 0)
    if depth == 0:
      end = index
      break
  return rest[:end], rest[end + 1:]


def parse(text: str) -> tuple[dict[str, list[_Instruction]], str]:
  """The module's computations (name -> instructions in order) and its entry's name."""
  computations: dict[str, list[_Instruction]] = {}
  entry, current = "", None
  for line in text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      current = computations.setdefault(header.group(1), [])
      entry = header.group(1) if line.startswith("ENTRY") else entry
      continue
    if line.rstrip() == "}":
      current = None
      continue
    if current is None:
      continue
    found = _INSTRUCTION.match(line)
    if found:
      name, shape, opcode, rest = found.groups()
      inside, attributes = _split_call(rest)
      current.append(_Instruction(name, shape, opcode, re.findall(r"%([^\s,()]+)", inside),
                                  attributes, inside, line.lstrip().startswith("ROOT ")))
    elif current:  # an attribute that spans lines (a kernel's metadata)
      current[-1].attributes += line
  return computations, entry


def _called(attributes: str, key: str) -> str | None:
  found = re.search(rf"\b{key}=%([^\s,}}]+)", attributes)
  return found.group(1) if found else None


def _instruction_flops(instruction: _Instruction, shapes: dict[str, str], computations) -> float:
  out = sum(count for _, count in _elements(instruction.shape))
  if instruction.opcode == "dot":
    contracting = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", instruction.attributes)
    lhs = _dims(shapes.get(instruction.operands[0], ""))
    k = math.prod(lhs[int(d)] for d in contracting.group(1).split(",") if d) if (
        contracting and lhs) else 1
    return 2.0 * out * k
  if instruction.opcode == "convolution":  # how a TPU writes most matmuls
    labels = re.search(r"dim_labels=\w*_(\w+)->", instruction.attributes)
    kernel = _dims(shapes.get(instruction.operands[1], "")) if len(instruction.operands) > 1 else []
    if labels and len(kernel) == len(labels.group(1)):
      outputs = kernel[labels.group(1).index("o")] if "o" in labels.group(1) else 1
      # A dilated input (how a TPU writes a batched matmul as a convolution) has zeros at all
      # but one in ``lhs_dilate`` window positions: they are not multiplied.
      dilation = re.search(r"lhs_dilate=([0-9x]+)", instruction.attributes)
      skipped = math.prod(int(d) for d in dilation.group(1).split("x")) if dilation else 1
      return 2.0 * out * math.prod(kernel) / max(outputs, 1) / skipped
    return 0.0
  if instruction.opcode == "fusion":
    return _flops(computations, _called(instruction.attributes, "calls") or "")
  if instruction.opcode in ("reduce", "reduce-window"):
    return float(sum(count for _, count in _elements(shapes.get(instruction.operands[0], ""))))
  return float(out) if instruction.opcode in _ARITHMETIC else 0.0


def _flops(computations, name: str) -> float:
  """FLOPs of a fused computation (nested fusions included)."""
  shapes = {i.name: i.shape for i in computations.get(name, [])}
  return sum(_instruction_flops(i, shapes, computations) for i in computations.get(name, []))


def _moved(instruction: _Instruction, shapes: dict[str, str], computations) -> float:
  """Bytes an op reads and writes. A slice read from a buffer (``dynamic-slice``) reads the
  slice, and an update written into one in place (``dynamic-update-slice``, how a loop
  stacks its per-step outputs) writes the update, not the whole buffer (as XLA's cost
  analysis counts them)."""
  operands = [_size(shapes.get(o, "")) for o in instruction.operands]
  if instruction.opcode.endswith("-start"):  # its result holds the operand beside the copy
    return 2.0 * sum(operands)
  if instruction.opcode == "dynamic-slice":
    return 2.0 * _size(instruction.shape) + sum(operands[1:])
  if instruction.opcode == "dynamic-update-slice":
    return 2.0 * operands[1] + sum(operands[2:]) if len(operands) > 1 else 0.0
  fused = computations.get(_called(instruction.attributes, "calls") or "", [])
  if instruction.opcode != "fusion" or not fused:
    return float(sum(operands) + _size(instruction.shape))
  by_name = {i.name: i for i in fused}
  uses: dict[str, list[tuple[_Instruction, int]]] = {}
  for user in fused:
    for position, operand in enumerate(user.operands):
      uses.setdefault(operand, []).append((user, position))
  read = 0.0
  for parameter in (i for i in fused if i.opcode == "parameter"):
    users = uses.get(parameter.name, [])
    if users and all(u.opcode == "dynamic-slice" and pos == 0 for u, pos in users):
      read += sum(_size(u.shape) for u, _ in users)
    elif not (users and all(u.opcode == "dynamic-update-slice" and pos == 0 for u, pos in users)):
      read += _size(parameter.shape)

  def written(output: _Instruction | None) -> int:
    if output is None:
      return 0
    if output.opcode == "dynamic-update-slice" and output.operands[1] in by_name:
      return _size(by_name[output.operands[1]].shape)  # the update, in place
    return _size(output.shape)

  root = next((i for i in fused if i.root), fused[-1])
  outputs = [by_name.get(o) for o in root.operands] if root.opcode == "tuple" else [root]
  return read + sum(written(output) for output in outputs)


def _op_name(attributes: str) -> str:
  found = re.search(r'op_name="([^"]*)"', attributes)
  return found.group(1) if found else ""


def _source(op_name: str) -> str:
  """The last four components of an op's JAX name."""
  parts = [p for p in op_name.split("/") if p]
  return "/".join(parts[-4:])


def part(op_name: str) -> str:
  """The part of the model an op comes from, from its JAX name: 'block/NAME' for module NAME
  of any block (``block_3/persistent/...``; the blocks are identical, so they are summed),
  'embedding' for the token embedding and its tied head, else 'outside blocks' (the loss, the
  optimizer, the head's softmax)."""
  parts = [p for p in op_name.split("/") if p]
  for index, name in enumerate(parts):
    if re.fullmatch(r"blocks?(_\d+)?", name):
      inner = parts[index + 1] if index + 1 < len(parts) else ""
      return f"block/{inner}" if re.fullmatch(r"[A-Za-z_]\w*", inner) else "block"
  if any(name.startswith("token_embed") for name in parts):
    return "embedding"
  return "outside blocks"


def _trips(computations, attributes: str) -> int:
  """A while loop's trip count: XLA's ``known_trip_count`` where it prints one (CPU, GPU), else
  the bound of its condition ``i < N`` (a TPU's loops; JAX's loops count from 0 by 1), else 1."""
  known = re.search(r'"known_trip_count":\{"n":"(\d+)"', attributes)
  if known:
    return int(known.group(1))
  condition = computations.get(_called(attributes, "condition") or "", [])
  constants = {i.name: i.inside.strip() for i in condition if i.opcode == "constant"}
  for instruction in condition:
    if instruction.opcode == "compare" and "direction=LT" in instruction.attributes:
      bound = constants.get(instruction.operands[-1], "") if instruction.operands else ""
      if bound.isdigit():
        return int(bound)
  return 1


def costs(text: str) -> list[OpCost]:
  """Every op the compiled module ``text`` runs between memories, with its cost."""
  computations, entry = parse(text)
  ops: list[OpCost] = []

  def walk(name: str, count: int) -> None:
    shapes = {i.name: i.shape for i in computations.get(name, [])}
    for instruction in computations.get(name, []):
      opcode, attributes = instruction.opcode, instruction.attributes
      if opcode == "while":
        walk(_called(attributes, "body") or "", count * _trips(computations, attributes))
        continue
      if opcode in ("call", "conditional", "async-start"):
        for called in re.findall(r"%([^\s,}]+)", attributes.split("metadata=")[0]):
          if called in computations:
            walk(called, count)
        continue
      if opcode in _FREE or opcode.endswith("-done"):  # an async pair is costed at its start
        continue
      kind = opcode
      if opcode == "fusion":
        found = re.search(r"kind=(\w+)", attributes)
        kind = f"fusion ({found.group(1)})" if found else opcode
      elif opcode == "custom-call":
        found = re.search(r'custom_call_target="([^"]+)"', attributes)
        kind = f"custom-call ({found.group(1)})" if found else opcode
      flops = 0.0 if opcode == "custom-call" else _instruction_flops(instruction, shapes,
                                                                      computations)
      op_name = _op_name(attributes)
      ops.append(OpCost(instruction.name, kind, _source(op_name), part(op_name),
                        _moved(instruction, shapes, computations), flops, count))

  walk(entry, 1)
  return ops


def top(ops: list[OpCost], by: str, count: int = 5) -> list[OpCost]:
  """The ``count`` ops with the most total ``by`` ('bytes' or 'flops')."""
  return sorted(ops, key=lambda op: getattr(op, f"total_{by}"), reverse=True)[:count]


def by_part(ops: list[OpCost], by: str) -> dict[str, float]:
  """Total ``by`` ('bytes' or 'flops') of each part of the model (``part``), largest first."""
  totals: dict[str, float] = {}
  for op in ops:
    totals[op.part] = totals.get(op.part, 0.0) + getattr(op, f"total_{by}")
  return dict(sorted(totals.items(), key=lambda item: item[1], reverse=True))


def summary(text: str, count: int = 5) -> dict:
  """The top ``count`` ops by bytes and by FLOPs of a compiled module, as plain dicts (for a
  report's JSON), with the totals over every op (loops multiplied out) and per part of the
  model (``parts``: bytes and FLOPs of each, largest first)."""
  ops = costs(text)
  totals = {by: sum(getattr(o, f"total_{by}") for o in ops) for by in ("bytes", "flops")}

  def rows(by):
    return [dict(name=o.name, kind=o.kind, source=o.source, count=o.count,
                 bytes=o.total_bytes, flops=o.total_flops,
                 share=getattr(o, f"total_{by}") / totals[by] if totals[by] else 0.0)
            for o in top(ops, by, count)]

  return dict(bytes=rows("bytes"), flops=rows("flops"), total_bytes=totals["bytes"],
              total_flops=totals["flops"],
              parts={by: by_part(ops, by) for by in ("bytes", "flops")})
