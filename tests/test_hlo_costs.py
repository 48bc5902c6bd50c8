"""Per-op bytes and FLOPs of a compiled module: the compiler's totals, loops multiplied out."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mosaics_jax import hlo_costs, losses, models

M, K, TRIPS = 64, 128, 3


def _scanned_matmul():
  def f(a, b, c):
    y, _ = jax.lax.scan(lambda x, _: (jnp.tanh(x @ b), None), a, None, length=TRIPS)
    return jnp.sum(y * c)

  shapes = [jax.ShapeDtypeStruct(s, jnp.float32) for s in ((M, K), (K, K), (M, K))]
  return jax.jit(f).lower(*shapes).compile()


def test_a_loop_counts_its_trips_and_a_matmul_its_flops():
  compiled = _scanned_matmul()
  ops = hlo_costs.costs(compiled.as_text())
  (matmul,) = [op for op in ops if "dot_general" in op.source]
  assert matmul.count == TRIPS and matmul.flops == 2 * M * K * K
  assert matmul.bytes == 4 * (M * K + K * K + M * K)  # operands and result, once each
  assert hlo_costs.top(ops, "flops", 1) == [matmul]
  # Each op once, as the compiler's cost analysis counts a loop's body: its totals.
  cost = compiled.cost_analysis()
  assert sum(op.bytes for op in ops) == pytest.approx(cost["bytes accessed"], rel=0.01)
  assert sum(op.flops for op in ops) == pytest.approx(cost["flops"], rel=0.01)
  summary = hlo_costs.summary(compiled.as_text(), count=2)
  assert summary["total_flops"] == pytest.approx(sum(op.flops * op.count for op in ops))
  assert [row["name"] for row in summary["flops"]][0] == matmul.name
  assert summary["flops"][0]["share"] == pytest.approx(matmul.total_flops / summary["total_flops"])


def test_a_models_gradient_matches_the_compilers_totals():
  config = models.MosaicConfig(version=1, vocab_size=512, num_layers=2, embed_dim=64,
                               num_heads=4, persistent_slots=64, context_length=128,
                               retrieval_implementation="reference",
                               persistent_implementation="reference")
  model = models.MosaicLM(config)
  tokens = jax.ShapeDtypeStruct((2, 128), jnp.int32)
  compiled = jax.jit(jax.grad(lambda p, x: losses.cross_entropy(model.apply({"params": p}, x),
                                                                x))).lower(
      models.abstract_params(model), tokens).compile()
  ops = hlo_costs.costs(compiled.as_text())
  cost = compiled.cost_analysis()
  assert sum(op.bytes for op in ops) == pytest.approx(cost["bytes accessed"], rel=0.02)
  assert sum(op.flops for op in ops) == pytest.approx(cost["flops"], rel=0.02)
  # The output layer (tied embedding, 512 x 64) is the largest matmul: forward and its two
  # gradients, 2 x 256 tokens x 64 x 512 FLOPs each.
  top = hlo_costs.top(ops, "flops", 3)
  assert all("token_embed.attend" in op.source for op in top)
  np.testing.assert_allclose([op.flops for op in top], 2 * 256 * 64 * 512)
  # By part of the model: both blocks' memories summed, the tied head apart, nothing lost.
  parts = hlo_costs.by_part(ops, "flops")
  assert {"block/context", "block/persistent", "embedding", "outside blocks"} <= set(parts)
  assert sum(parts.values()) == pytest.approx(sum(op.flops for op in ops))
  assert parts["embedding"] == pytest.approx(3 * 2 * 256 * 64 * 512, rel=0.01)
  assert list(hlo_costs.by_part(ops, "bytes"))[0] == "block/context"  # T x T weights


# A TPU's loops print no trip count (their condition i < N does) and its matmuls are
# convolutions; written out here, so that no TPU compiler is needed.
TPU_MODULE = """
HloModule jit_f

%fused (param_0: f32[64,128], param_1: bf16[128,256]) -> f32[64,256] {
  %param_0 = f32[64,128]{1,0:T(8,128)} parameter(0)
  %param_1 = bf16[128,256]{1,0:T(8,128)(2,1)} parameter(1)
  ROOT %convolution.3 = f32[64,256]{1,0:T(8,128)} convolution(%param_0, %param_1), dim_labels=bf_io->bf, metadata={op_name="jit(f)/while/body/dot_general"}
}

%body (arg: (s32[], f32[64,128], bf16[128,256])) -> (s32[], f32[64,128], bf16[128,256]) {
  %arg = (s32[]{:T(128)}, f32[64,128]{1,0}, bf16[128,256]{1,0}) parameter(0)
  %i = s32[]{:T(128)} get-tuple-element(%arg), index=0
  %x = f32[64,128]{1,0} get-tuple-element(%arg), index=1
  %w = bf16[128,256]{1,0} get-tuple-element(%arg), index=2
  %conv_fusion = f32[64,256]{1,0} fusion(%x, %w), kind=kOutput, calls=%fused, metadata={op_name="jit(f)/while/body/dot_general"}
  ROOT %t = (s32[]{:T(128)}, f32[64,128]{1,0}, bf16[128,256]{1,0}) tuple(%i, %x, %w)
}

%cond (arg.1: (s32[], f32[64,128], bf16[128,256])) -> pred[] {
  %bound = s32[]{:T(128)} constant(7)
  %arg.1 = (s32[]{:T(128)}, f32[64,128]{1,0}, bf16[128,256]{1,0}) parameter(0)
  %i.1 = s32[]{:T(128)} get-tuple-element(%arg.1), index=0
  ROOT %lt = pred[]{:T(512)} compare(%i.1, %bound), direction=LT
}

ENTRY %main (a: f32[64,128], w: bf16[128,256]) -> f32[64,128] {
  %a = f32[64,128]{1,0} parameter(0)
  %w.1 = bf16[128,256]{1,0} parameter(1)
  %zero = s32[]{:T(128)} constant(0)
  %start = (f32[64,128]{1,0:S(1)}, f32[64,128]{1,0}, u32[]{:S(2)}) copy-start(%a)
  %done = f32[64,128]{1,0:S(1)} copy-done(%start)
  %init = (s32[]{:T(128)}, f32[64,128]{1,0}, bf16[128,256]{1,0}) tuple(%zero, %done, %w.1)
  %loop = (s32[]{:T(128)}, f32[64,128]{1,0}, bf16[128,256]{1,0}) while(%init), condition=%cond, body=%body
  ROOT %out = f32[64,128]{1,0} get-tuple-element(%loop), index=1
}
"""


def test_a_tpu_module_loops_by_its_bound_and_multiplies_by_convolutions():
  ops = {op.name: op for op in hlo_costs.costs(TPU_MODULE)}
  assert set(ops) == {"start", "conv_fusion"}  # the async copy once, at its start
  fusion = ops["conv_fusion"]
  assert fusion.count == 7 and fusion.kind == "fusion (kOutput)"
  assert fusion.flops == 2 * 64 * 256 * 128
  assert fusion.bytes == 64 * 128 * 4 + 128 * 256 * 2 + 64 * 256 * 4
  assert fusion.source == "jit(f)/while/body/dot_general"
  assert ops["start"].bytes == 2 * 64 * 128 * 4 and ops["start"].flops == 0
