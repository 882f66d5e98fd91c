#!/usr/bin/env python3
"""Build a tiny random Hugging Face MoE checkpoint with transformers and record reference outputs.

Usage:
  make_reference.py --arch {mixtral,qwen2_moe,qwen3_moe,olmoe} --variant NAME \
                    --dtype {float32,bfloat16} --out DIR [--seed N] [--layout {saved,per-expert,fused}]
  make_reference.py --list-variants          # one "arch variant" per line

DIR receives a SHARDED safetensors checkpoint (config.json, generation_config.json,
model-0000k-of-0000N.safetensors, model.safetensors.index.json), plus
  reference.safetensors  input_ids [B,S] int64; logits [B,S,V] f32; embeddings [B,S,H] f32;
                         hidden.<i> [B,S,H] f32 = output of decoder layer i (before the final norm);
                         final_norm [B,S,H] f32 = model.norm(hidden.<L-1>) (= last_hidden_state);
                         router_logits.<i> [B*S,E] f32, topk_ids.<i> [B*S,k] i64, topk_weights.<i> [B*S,k] f32
                         for every decoder layer i that has a router (dense layers have none);
                         topk_margin.<i> [B*S] f32 = p_k - p_(k+1) of the float32 softmax per token: tokens
                         with a tiny margin (0 = exact tie, happens in bf16) may legitimately route
                         differently under a different summation order, so mask them when comparing ids;
                         alt_logits [B,S,V] f32 = logits with the other experts implementation
                         (see reference.json "alt_experts_implementation").
                         rule_logits.<n> [B,S,V] f32, rule_k.<n>.<i> [B*S] i64: logits and per-token k of layer i
                         with the n-th --routing rule applied to the stock routers (routing_reference.py);
                         reference.json "routing" lists the rules, their threshold and their smallest margin.
  reference.json         arch, variant, dtype, seed, layout, moe_layers, dense_layers, num_experts, top_k, ...
All outputs are computed by a model re-loaded with AutoModelForCausalLM.from_pretrained(DIR) (i.e. from
what is on disk), in eval mode, attn_implementation="eager", output_router_logits=True; bf16 outputs are
cast to float32 losslessly. The script asserts that every layout (saved / per-expert / fused) loads with
no missing/unexpected keys, yields bit-identical parameters and bit-identical logits (in this one process:
the same parameters in memory run through the same kernels with the same threads, so this holds on any CPU;
logits from another machine or torch build may differ in the last bits).

Observed with transformers 5.24.0 / torch 2.15 (save_pretrained, safe_serialization=True)
==========================================================================================
In memory, v5 models hold the experts FUSED (experts.gate_up_proj [E,2I,H] with the gate rows first,
experts.down_proj [E,H,I]) and Mixtral's MoE block lives under `.mlp.`; but save_pretrained REVERTS the
load-time conversion (conversion_mapping.py) and writes the classic PER-EXPERT hub layout:

mixtral (MixtralForCausalLM):
  model.embed_tokens.weight [V,H]            lm_head.weight [V,H] (absent when tie_word_embeddings)
  model.norm.weight [H]
  model.layers.{i}.input_layernorm.weight [H]   model.layers.{i}.post_attention_layernorm.weight [H]
  model.layers.{i}.self_attn.{q,k,v,o}_proj.weight   q [nH*D,H] k,v [nKV*D,H] o [H,nH*D]   (no biases)
  model.layers.{i}.block_sparse_moe.gate.weight [E,H]
  model.layers.{i}.block_sparse_moe.experts.{j}.w1.weight [I,H] (gate)  .w3.weight [I,H] (up)
  model.layers.{i}.block_sparse_moe.experts.{j}.w2.weight [H,I] (down)
  router: softmax(float32(logits)) -> topk -> ALWAYS renormalised, weights stay float32.
qwen2_moe (Qwen2MoeForCausalLM):
  ... self_attn.{q,k,v}_proj.{weight,bias} (bias iff qkv_bias, default true), o_proj.weight (no bias)
  MoE layer:   mlp.gate.weight [E,H]; mlp.experts.{j}.{gate_proj,up_proj}.weight [I,H], down_proj.weight [H,I]
               mlp.shared_expert.{gate_proj,up_proj}.weight [Is,H], mlp.shared_expert.down_proj.weight [H,Is]
               mlp.shared_expert_gate.weight [1,H]   (out = experts + sigmoid(x @ g^T) * shared(x))
  dense layer: mlp.{gate_proj,up_proj}.weight [Id,H], mlp.down_proj.weight [H,Id]   (Id = intermediate_size)
  A layer is MoE iff i not in mlp_only_layers and (i+1) % decoder_sparse_step == 0.
  router: softmax(logits, dtype=float32) -> topk -> renormalise iff norm_topk_prob -> cast to logits dtype.
qwen3_moe (Qwen3MoeForCausalLM): like qwen2_moe without shared expert, plus
  self_attn.q_norm.weight [D], self_attn.k_norm.weight [D] (RMSNorm per head, before RoPE);
  {q,k,v,o}_proj.bias only if attention_bias. head_dim is explicit (nH*D may differ from H).
  Same layer-selection rule and router as qwen2_moe.
  NOTE: config.json says "num_local_experts" (attribute_map alias), NOT "num_experts" as hub Qwen3 files do.
olmoe (OlmoeForCausalLM):
  self_attn.q_norm.weight [nH*D], self_attn.k_norm.weight [nKV*D] (RMSNorm over the FULL projection, before
  the head split), then clamp q,k,v to [-clip_qkv, clip_qkv] if clip_qkv is set, then RoPE.
  mlp.gate.weight [E,H]; mlp.experts.{j}.{gate_proj,up_proj,down_proj}.weight; every layer is MoE.
  router: as qwen2_moe (norm_topk_prob default false).
qwen3_5_moe (Qwen3_5MoeForCausalLM, model_type "qwen3_5_moe_text"; variant "multimodal":
  Qwen3_5MoeForConditionalGeneration, model_type "qwen3_5_moe" with text_config, every language-model tensor under
  model.language_model. and a vision tower model.visual.*, re-loaded with AutoModelForCausalLM, which drops it):
  layer_types "linear_attention" -> linear_attn.{in_proj_qkv [2*Kd+Vd,H], in_proj_z [Vd,H], in_proj_b/in_proj_a [nv,H],
  conv1d.weight [2*Kd+Vd,1,kernel], dt_bias [nv], A_log [nv], norm.weight [dv], out_proj [H,Vd]};
  "full_attention" -> self_attn with q_proj [2*nH*D,H] (query and output gate per head), q_norm/k_norm [D].
  Every layer MoE with shared_expert + shared_expert_gate as qwen2_moe; router always renormalises its top-k.
  RMSNorms (except linear_attn.norm) are zero-centred: x_hat * (1 + w); partial RoPE (factor 0.25 by default).
Fused layout (--layout fused, also accepted by from_pretrained for all four archs):
  model.layers.{i}.mlp.gate.weight [E,H]  (Mixtral too: `.mlp.`, not `.block_sparse_moe.`)
  model.layers.{i}.mlp.experts.gate_up_proj [E,2I,H] = cat([gate_j], [up_j]) along dim 1 (gate rows first)
  model.layers.{i}.mlp.experts.down_proj [E,H,I]
gpt_oss (GptOssForCausalLM): ONE layout only, fused and transposed (save_pretrained writes it as in memory):
  self_attn.{q,k,v,o}_proj.{weight,bias} (bias iff attention_bias, default true), self_attn.sinks [nH]
  mlp.router.weight [E,H], mlp.router.bias [E]
  mlp.experts.gate_up_proj [E,H,2I] (x @ W; columns interleaved: even = gate, odd = up), gate_up_proj_bias [E,2I]
  mlp.experts.down_proj [E,I,H], down_proj_bias [E,H]; every layer MoE; layer_types sliding/full.
  router: topk(logits) -> softmax over the k values in the logits' dtype. Experts: gate clamped above at
  swiglu_limit, up to [-limit, limit], (up + 1) * gate * sigmoid(swiglu_alpha * gate). Norms stay float32
  under a bf16 load (_keep_in_fp32_modules). --layout per-expert does not exist for it (saved = fused).
RoPE: config.json stores "rope_parameters": {"rope_type", "rope_theta", ...} (v5 name; v4 had rope_theta
  + rope_scaling). Sliding window (Mixtral): key j visible from query i iff i-W < j <= i.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections import OrderedDict

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (AutoModelForCausalLM, DeepseekV3Config, Glm4MoeConfig, GptOssConfig, MixtralConfig,
                          OlmoeConfig, Qwen2MoeConfig, Qwen3MoeConfig)
from transformers import Qwen3_5MoeConfig, Qwen3_5MoeForConditionalGeneration, Qwen3_5MoeTextConfig

import routing_reference

ARCHS = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "gpt_oss", "qwen3_5_moe", "glm4_moe", "deepseek_v3")
# Sigmoid routers (Glm4MoeTopkRouter, DeepseekV3TopkRouter): no dynamic-k routing rules, their own route() and
# margins.
SIGMOID_ARCHS = ("glm4_moe", "deepseek_v3")
CONFIG_CLASSES = {
    "mixtral": MixtralConfig,
    "qwen2_moe": Qwen2MoeConfig,
    "qwen3_moe": Qwen3MoeConfig,
    "olmoe": OlmoeConfig,
    "gpt_oss": GptOssConfig,
    "qwen3_5_moe": Qwen3_5MoeTextConfig,
    "glm4_moe": Glm4MoeConfig,
    "deepseek_v3": DeepseekV3Config,
}
renormalises = routing_reference.renormalises
# Variant keys that are not config fields: "_seq_len" (default SEQ_LEN) and "_multimodal" (build
# Qwen3_5MoeForConditionalGeneration with a tiny vision tower: tensors under model.language_model.).
TINY_VISION = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64)

BATCH = 3
SEQ_LEN = 24
WEIGHT_STD = 0.2
NORM_STD = 0.2
CORRECTION_BIAS_STD = 0.1

COMMON = dict(
    vocab_size=256,
    hidden_size=64,
    num_experts_per_tok=2,
    hidden_act="silu",
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=None,
    tie_word_embeddings=False,
    initializer_range=WEIGHT_STD,
)

# Every variant: hidden 64, 8 experts, top-2, vocab 256, head_dim 16.
VARIANTS: dict[str, dict[str, dict]] = {
    "mixtral": {
        # GQA (4 q heads / 2 kv heads) + sliding window 8 < seq len 24.
        "gqa_swa": dict(
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            intermediate_size=32, num_local_experts=8, sliding_window=8,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        ),
        # MQA (1 kv head), tied embeddings, linear RoPE scaling.
        "mqa_tied_linear_rope": dict(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
            intermediate_size=32, num_local_experts=8, sliding_window=None, tie_word_embeddings=True,
            rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
        ),
    },
    "qwen2_moe": {
        # Shared expert + gate, qkv bias, norm_topk_prob false, layer 1 dense via mlp_only_layers.
        "shared_mlp_only": dict(
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=96, moe_intermediate_size=32, shared_expert_intermediate_size=48,
            num_experts=8, qkv_bias=True, norm_topk_prob=False, mlp_only_layers=[1], decoder_sparse_step=1,
        ),
        # decoder_sparse_step 2 -> layers 1,3 MoE, 0,2 dense; norm_topk_prob true; tied; llama3 RoPE.
        "sparse_step2_tied_llama3_rope": dict(
            num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
            intermediate_size=96, moe_intermediate_size=32, shared_expert_intermediate_size=48,
            num_experts=8, qkv_bias=True, norm_topk_prob=True, mlp_only_layers=[], decoder_sparse_step=2,
            tie_word_embeddings=True, max_position_embeddings=65536,
            rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 8192},
        ),
    },
    "qwen3_moe": {
        # GQA 8 q heads / 2 kv heads, head_dim 16 -> q width 128 != hidden 64; norm_topk_prob true.
        "gqa_norm_topk": dict(
            num_hidden_layers=3, num_attention_heads=8, num_key_value_heads=2, head_dim=16,
            intermediate_size=96, moe_intermediate_size=32, num_experts=8, norm_topk_prob=True,
            mlp_only_layers=[],
        ),
        # norm_topk_prob false, layer 0 dense via mlp_only_layers.
        "mlp_only_no_norm_topk": dict(
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            intermediate_size=96, moe_intermediate_size=32, num_experts=8, norm_topk_prob=False,
            mlp_only_layers=[0],
        ),
        # YaRN RoPE (attention factor != 1 scales cos/sin), tied embeddings, norm_topk_prob true.
        "yarn_tied": dict(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            intermediate_size=96, moe_intermediate_size=32, num_experts=8, norm_topk_prob=True,
            mlp_only_layers=[], tie_word_embeddings=True, max_position_embeddings=128,
            rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                             "original_max_position_embeddings": 32},
        ),
        # attention_bias true: biases on q,k,v AND o_proj.
        "attn_bias": dict(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            intermediate_size=96, moe_intermediate_size=32, num_experts=8, norm_topk_prob=True,
            mlp_only_layers=[], attention_bias=True,
        ),
    },
    "qwen3_5_moe": {
        # Gated DeltaNet (linear_attention) and gated full attention layers, GQA 4/2, partial RoPE 0.25,
        # 2 key / 4 value heads in the DeltaNet, sequences of 80 tokens (> one 64-token chunk, not a multiple).
        "hybrid_chunks": dict(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            moe_intermediate_size=32, shared_expert_intermediate_size=48, num_experts=8,
            layer_types=["linear_attention", "full_attention"],
            linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=8,
            linear_conv_kernel_dim=4, _seq_len=80,
        ),
        # The multimodal checkpoint (Qwen3_5MoeForConditionalGeneration): tensors under model.language_model.,
        # a vision tower the engine ignores; MHA in the DeltaNet (equal key and value heads).
        "multimodal": dict(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, head_dim=16,
            moe_intermediate_size=32, shared_expert_intermediate_size=48, num_experts=8,
            layer_types=["full_attention", "linear_attention"],
            linear_num_key_heads=2, linear_num_value_heads=2, linear_key_head_dim=16, linear_value_head_dim=16,
            linear_conv_kernel_dim=4, _seq_len=70, _multimodal=True,
        ),
    },
    "glm4_moe": {
        # 2 groups of 4 with 1 kept (top-2 from one group), q/k norm, norm_topk_prob true, layer 0 dense, partial
        # RoPE 0.25 given explicitly.
        "groups2_top1": dict(
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            intermediate_size=96, moe_intermediate_size=32, n_routed_experts=8, n_shared_experts=1,
            n_group=2, topk_group=1, norm_topk_prob=True, routed_scaling_factor=1.5, first_k_dense_replace=1,
            use_qk_norm=True, attention_bias=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
        ),
        # q/k norm, 4 groups of 2 experts with 2 kept, norm_topk_prob true, scaling 2.5, layer 0 dense
        # (first_k_dense_replace 1), attention biases on q/k/v, partial RoPE 0.5, GQA 4/2.
        "qk_norm_groups4": dict(
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            intermediate_size=96, moe_intermediate_size=32, n_routed_experts=8, n_shared_experts=1,
            n_group=4, topk_group=2, norm_topk_prob=True, routed_scaling_factor=2.5, first_k_dense_replace=1,
            use_qk_norm=True, attention_bias=True,
        ),
        # No q/k norm, one group (plain top-k of the biased scores), norm_topk_prob false, every layer MoE
        # (first_k_dense_replace 0), two shared experts (width 2 * 32), MHA, tied embeddings.
        "flat_no_norm": dict(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, head_dim=16,
            intermediate_size=96, moe_intermediate_size=32, n_routed_experts=8, n_shared_experts=2,
            n_group=1, topk_group=1, norm_topk_prob=False, routed_scaling_factor=1.0, first_k_dense_replace=0,
            use_qk_norm=False, attention_bias=False, tie_word_embeddings=True,
        ),
    },
    "deepseek_v3": {
        # MLA with q-LoRA (q_a_proj/q_a_layernorm/q_b_proj), v_head_dim 12 != qk_nope_head_dim 16, interleaved RoPE
        # of 8 dims, YaRN factor 4 with mscale 1 != mscale_all_dim 0.8 (cos/sin scaled by 1.02, the softmax scale
        # by mscale(4, 0.8)^2 = 1.23); 2 groups of 4 with 1 kept, norm_topk_prob true, scaling 2.5, layer 0 dense.
        "qlora_yarn_groups2": dict(
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=32, kv_lora_rank=24,
            qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=12, intermediate_size=96, moe_intermediate_size=32,
            n_routed_experts=8, n_shared_experts=1, n_group=2, topk_group=1, norm_topk_prob=True,
            routed_scaling_factor=2.5, first_k_dense_replace=1, rope_interleave=True, attention_bias=False,
            max_position_embeddings=128,
            rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                             "original_max_position_embeddings": 32, "beta_fast": 32.0, "beta_slow": 1.0,
                             "mscale": 1.0, "mscale_all_dim": 0.8},
        ),
        # No q-LoRA (q_lora_rank null: q_proj), plain RoPE not interleaved, attention biases (q_a/kv_a/o), one group
        # (plain top-k of the biased scores), norm_topk_prob false, every layer MoE (first_k_dense_replace 0), two
        # shared experts, tied embeddings.
        "no_qlora_flat_bias": dict(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=None, kv_lora_rank=16,
            qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=16, intermediate_size=96, moe_intermediate_size=32,
            n_routed_experts=8, n_shared_experts=2, n_group=1, topk_group=1, norm_topk_prob=False,
            routed_scaling_factor=1.0, first_k_dense_replace=0, rope_interleave=False, attention_bias=True,
            tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        # DeepSeek-V3's own YaRN form (mscale = mscale_all_dim = 1: cos/sin unscaled, the softmax scale corrected),
        # factor 8; 4 groups of 2 with 2 kept, scaling 1.5, layer 0 dense, q-LoRA, 4 rope dims.
        "qlora_groups4_yarn_hub": dict(
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=24, kv_lora_rank=32,
            qk_nope_head_dim=16, qk_rope_head_dim=4, v_head_dim=16, intermediate_size=96, moe_intermediate_size=32,
            n_routed_experts=8, n_shared_experts=1, n_group=4, topk_group=2, norm_topk_prob=True,
            routed_scaling_factor=1.5, first_k_dense_replace=1, rope_interleave=True, attention_bias=False,
            max_position_embeddings=256,
            rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0,
                             "original_max_position_embeddings": 32, "beta_fast": 32, "beta_slow": 1,
                             "mscale": 1.0, "mscale_all_dim": 1.0},
        ),
    },
    "olmoe": {
        # Full-width q/k RMSNorm + clip_qkv (clips a good fraction of q, k, v), norm_topk_prob false, MHA.
        "clip_qk_norm": dict(
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
            intermediate_size=32, num_experts=8, clip_qkv=1.5, norm_topk_prob=False,
        ),
        # GQA (k_norm over nKV*D), no clipping, norm_topk_prob true.
        "gqa_norm_topk": dict(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=32, num_experts=8, clip_qkv=None, norm_topk_prob=True,
        ),
    },
    "gpt_oss": {
        # layer_types sliding/full/sliding with window 8 < seq len 24, sinks, attention biases, GQA, GptOssConfig's
        # default YaRN (factor 32, truncate false, theta 150000); swiglu_limit 1.5 so the clamps bite.
        "swa_sinks_yarn": dict(
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            intermediate_size=32, num_local_experts=8, sliding_window=8, swiglu_limit=1.5,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        ),
        # full then sliding (explicit layer_types), MQA, no attention biases, tied embeddings, YaRN with
        # truncation and its own theta, the default limit 7.
        "full_first_tied_yarn_truncate": dict(
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
            intermediate_size=32, num_local_experts=8, sliding_window=6, attention_bias=False,
            tie_word_embeddings=True, layer_types=["full_attention", "sliding_attention"],
            max_position_embeddings=256,
            rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "beta_fast": 32.0,
                             "beta_slow": 1.0, "truncate": True, "original_max_position_embeddings": 64},
        ),
    },
}

transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
LAYOUTS = ("saved", "per-expert", "fused")


# ----------------------------------------------------------------------------------------------
# model construction
# ----------------------------------------------------------------------------------------------

def variant_seq_len(arch: str, variant: str) -> int:
    return VARIANTS[arch][variant].get("_seq_len", SEQ_LEN)


def is_multimodal(arch: str, variant: str) -> bool:
    return bool(VARIANTS[arch][variant].get("_multimodal", False))


def make_config(arch: str, variant: str):
    params = dict(COMMON)
    params.update({k: v for k, v in copy.deepcopy(VARIANTS[arch][variant]).items() if not k.startswith("_")})
    if is_multimodal(arch, variant):
        tie = params.pop("tie_word_embeddings", False)
        return Qwen3_5MoeConfig(text_config=params, vision_config=dict(TINY_VISION), tie_word_embeddings=tie)
    return CONFIG_CLASSES[arch](**params)


def is_norm_weight(name: str) -> bool:
    return name.endswith("norm.weight")  # input/post_attention layernorm, q_norm, k_norm, model.norm


@torch.no_grad()
def init_weights(model: torch.nn.Module, seed: int) -> None:
    """Deterministic, deliberately large init: N(0, 0.2) everywhere, norms 1 + N(0, 0.2), random biases."""
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():  # tied lm_head is deduplicated here
        noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
        if is_norm_weight(name):
            param.copy_(1.0 + NORM_STD * noise)
        elif name.endswith("linear_attn.A_log"):
            # Gated DeltaNet decay rates A = exp(A_log) around 0.1 (log decay per token ~ -0.1): with A ~ 1 the
            # log decays summed over a 64-token chunk reach -100s, and exp(cum_i - cum_j) of such sums loses
            # fp32 precision in transformers itself (its fp32 logits then differ from fp64 by 2.5e-5 relative).
            param.copy_(math.log(0.1) + WEIGHT_STD * noise)
        else:
            param.copy_(WEIGHT_STD * noise)
    for name, buf in model.named_buffers():
        if name.endswith("e_score_correction_bias"):  # a buffer, zero by default: make the selection bias bite
            buf.copy_(CORRECTION_BIAS_STD * torch.randn(buf.shape, generator=gen, dtype=torch.float32))


def router_modules(model) -> list[tuple[int, torch.nn.Module]]:
    out = []
    for i, layer in enumerate(model.model.layers):
        gate = getattr(layer.mlp, "gate", None) or getattr(layer.mlp, "router", None)  # gpt_oss: mlp.router
        if gate is not None and type(gate).__name__.lower().endswith("topkrouter"):  # glm4_moe: TopkRouter
            out.append((i, gate))
    return out


def num_experts(cfg) -> int:
    return cfg.n_routed_experts if hasattr(cfg, "n_routed_experts") else cfg.num_experts


def sigmoid_choice(gate, logits: torch.Tensor):
    """The DeepSeek router's selection, written from its definition: sigmoid scores, choice = scores + bias,
    groups scored by their top-2 choice sum, the topk_group best kept. Returns (scores, masked choice,
    group scores) in float32."""
    scores = logits.float().sigmoid()
    choice = scores + gate.e_score_correction_bias.float()
    n, e = choice.shape
    g = gate.num_group
    group_scores = choice.view(n, g, e // g).topk(2, dim=-1).values.sum(-1)
    keep = torch.zeros(n, g, dtype=torch.bool)
    keep.scatter_(1, group_scores.topk(gate.topk_group, dim=-1).indices, True)
    choice = choice.masked_fill(~keep.repeat_interleave(e // g, dim=1), float("-inf"))
    return scores, choice, group_scores


def sigmoid_route(gate, logits: torch.Tensor):
    """(ids by decreasing choice score, weights) of Glm4MoeTopkRouter."""
    scores, choice, _ = sigmoid_choice(gate, logits)
    ids = choice.topk(gate.top_k, dim=-1).indices
    weights = scores.gather(1, ids)
    if gate.norm_topk_prob:
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
    return ids.to(torch.int64), (weights * gate.routed_scaling_factor).float()


def sigmoid_margin(gate, logits: torch.Tensor) -> torch.Tensor:
    """Per token: the smaller of the gap between the k-th and (k+1)-th choice scores of the kept groups and
    the gap between the last kept and the first dropped group score (either near 0 = tie risk)."""
    _, choice, group_scores = sigmoid_choice(gate, logits)
    top = choice.topk(gate.top_k + 1, dim=-1).values
    margin = torch.nan_to_num(top[:, gate.top_k - 1] - top[:, gate.top_k], posinf=1e9)
    if gate.topk_group < gate.num_group:
        g = group_scores.topk(gate.topk_group + 1, dim=-1).values
        margin = torch.minimum(margin, g[:, gate.topk_group - 1] - g[:, gate.topk_group])
    return margin.float().contiguous()


def route(arch: str, logits: torch.Tensor, top_k: int, norm_topk_prob: bool):
    """Exactly the arch's TopKRouter formula (transformers 5.24), returns (ids int64, weights float32)."""
    if arch == "mixtral":
        probs = torch.nn.functional.softmax(logits.float(), dim=-1)
        weights, ids = torch.topk(probs, top_k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
    elif arch == "gpt_oss":
        top, ids = torch.topk(logits, top_k, dim=-1)
        weights = torch.nn.functional.softmax(top, dim=1, dtype=top.dtype)
    else:
        probs = torch.nn.functional.softmax(logits, dtype=torch.float, dim=-1)
        weights, ids = torch.topk(probs, top_k, dim=-1)
        if norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        weights = weights.to(logits.dtype)
    return ids.to(torch.int64), weights.float()


def topk_margin(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Per token: gap between the k-th and (k+1)-th routing probability (0 = exact tie; small = tie risk)."""
    probs = torch.nn.functional.softmax(logits.float(), dim=-1)
    top = torch.topk(probs, top_k + 1, dim=-1).values
    return (top[:, top_k - 1] - top[:, top_k]).contiguous()


# ----------------------------------------------------------------------------------------------
# checkpoint layout rewriting
# ----------------------------------------------------------------------------------------------

def natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_checkpoint(ckpt_dir: str) -> "OrderedDict[str, torch.Tensor]":
    with open(os.path.join(ckpt_dir, "model.safetensors.index.json")) as f:
        index = json.load(f)
    tensors: OrderedDict[str, torch.Tensor] = OrderedDict()
    for shard in sorted(set(index["weight_map"].values())):
        with safe_open(os.path.join(ckpt_dir, shard), framework="pt") as f:
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    assert set(tensors) == set(index["weight_map"]), "index.json and shards disagree"
    return tensors


def expert_names(arch: str):
    """(moe prefix in the per-expert layout, gate name, up name, down name)."""
    if arch == "mixtral":
        return "block_sparse_moe", "w1", "w3", "w2"
    return "mlp", "gate_proj", "up_proj", "down_proj"


PER_EXPERT_RE = re.compile(
    r"^(?P<layer>model\.(?:language_model\.)?layers\.\d+)\.(?P<block>mlp|block_sparse_moe)\.experts\.(?P<j>\d+)\."
    r"(?P<proj>w1|w2|w3|gate_proj|up_proj|down_proj)\.weight$")
FUSED_RE = re.compile(r"^(?P<layer>model\.(?:language_model\.)?layers\.\d+)\.mlp\.experts\.(?P<proj>gate_up_proj|down_proj)$")
GATE_RE = re.compile(r"^(?P<layer>model\.(?:language_model\.)?layers\.\d+)\.(?P<block>mlp|block_sparse_moe)\.gate\.weight$")


def to_fused(arch: str, tensors):
    _, g_name, u_name, d_name = expert_names(arch)
    out, experts = {}, {}
    for key, t in tensors.items():
        m = PER_EXPERT_RE.match(key)
        if m:
            experts.setdefault(m["layer"], {}).setdefault(m["proj"], {})[int(m["j"])] = t
            continue
        m = GATE_RE.match(key)
        if m:
            out[f"{m['layer']}.mlp.gate.weight"] = t
            continue
        out[key] = t  # already fused keys or non-expert weights
    for layer, projs in experts.items():
        n = len(projs[g_name])
        assert sorted(projs[g_name]) == list(range(n)) == sorted(projs[u_name]) == sorted(projs[d_name])
        gate = torch.stack([projs[g_name][j] for j in range(n)])
        up = torch.stack([projs[u_name][j] for j in range(n)])
        out[f"{layer}.mlp.experts.gate_up_proj"] = torch.cat([gate, up], dim=1).contiguous()
        out[f"{layer}.mlp.experts.down_proj"] = torch.stack([projs[d_name][j] for j in range(n)]).contiguous()
    return out


def to_per_expert(arch: str, tensors):
    block, g_name, u_name, d_name = expert_names(arch)
    fused = to_fused(arch, tensors)  # canonicalise first
    out = {}
    for key, t in fused.items():
        m = FUSED_RE.match(key)
        if m:
            layer = m["layer"]
            if m["proj"] == "gate_up_proj":
                inter = t.shape[1] // 2
                for j in range(t.shape[0]):
                    out[f"{layer}.{block}.experts.{j}.{g_name}.weight"] = t[j, :inter].contiguous()
                    out[f"{layer}.{block}.experts.{j}.{u_name}.weight"] = t[j, inter:].contiguous()
            else:
                for j in range(t.shape[0]):
                    out[f"{layer}.{block}.experts.{j}.{d_name}.weight"] = t[j].contiguous()
            continue
        m = GATE_RE.match(key)
        if m:
            out[f"{m['layer']}.{block}.gate.weight"] = t
            continue
        out[key] = t
    return out


def write_sharded(ckpt_dir: str, tensors, shard_bytes: int) -> int:
    for name in os.listdir(ckpt_dir):
        if name.startswith("model") and (name.endswith(".safetensors") or name.endswith(".index.json")):
            os.remove(os.path.join(ckpt_dir, name))
    keys = sorted(tensors, key=natural_key)
    shards, cur, cur_bytes = [], [], 0
    for k in keys:
        nbytes = tensors[k].numel() * tensors[k].element_size()
        if cur and cur_bytes + nbytes > shard_bytes:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append(k)
        cur_bytes += nbytes
    if cur:
        shards.append(cur)
    weight_map, total = {}, 0
    for n, shard_keys in enumerate(shards, start=1):
        fname = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
        save_file({k: tensors[k].contiguous() for k in shard_keys}, os.path.join(ckpt_dir, fname),
                  metadata={"format": "pt"})
        for k in shard_keys:
            weight_map[k] = fname
            total += tensors[k].numel() * tensors[k].element_size()
    with open(os.path.join(ckpt_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2, sort_keys=True)
        f.write("\n")
    return len(shards)


def rewrite_layout(arch: str, ckpt_dir: str, layout: str, shard_bytes: int) -> None:
    if layout == "saved":
        return
    tensors = read_checkpoint(ckpt_dir)
    new = to_fused(arch, tensors) if layout == "fused" else to_per_expert(arch, tensors)
    n = write_sharded(ckpt_dir, new, shard_bytes)
    assert n >= 2, f"expected a sharded checkpoint, got {n} shard(s)"


def classify_layout(arch: str, ckpt_dir: str) -> str:
    with open(os.path.join(ckpt_dir, "model.safetensors.index.json")) as f:
        keys = json.load(f)["weight_map"]
    fused = any(FUSED_RE.match(k) for k in keys)
    per_expert = any(PER_EXPERT_RE.match(k) for k in keys)
    assert fused != per_expert, "mixed expert layout"
    return "fused" if fused else "per-expert"


# ----------------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------------

def load(ckpt_dir: str, dtype, experts_impl: str):
    model, info = AutoModelForCausalLM.from_pretrained(
        ckpt_dir, dtype=dtype, attn_implementation="eager", experts_implementation=experts_impl,
        output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    assert not problems, f"loading {ckpt_dir}: {problems}"
    # from_pretrained may leave a parameter in the mapped shard at any 8-byte offset, and the CPU GEMM kernels
    # sum unaligned operands in another order (a fused gate_up_proj at offset 40 mod 64 changed a deepseek_v3
    # model's logits by 2e-6): copies at the allocator's alignment run every layout through the same kernels.
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.clone()
    model.eval()
    return model


@torch.inference_mode()
def forward_capture(model, input_ids: torch.Tensor):
    layers = model.model.layers
    hidden: dict[int, torch.Tensor] = {}
    routers: dict[int, tuple] = {}
    handles = []

    def layer_hook(i):
        def hook(_mod, _inp, out):
            hidden[i] = (out[0] if isinstance(out, tuple) else out).detach().clone()
        return hook

    def router_hook(i):
        def hook(_mod, _inp, out):
            routers[i] = tuple(t.detach().clone() for t in out)
        return hook

    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_hook(layer_hook(i)))
    for i, gate in router_modules(model):
        handles.append(gate.register_forward_hook(router_hook(i)))
    try:
        out = model(input_ids=input_ids, output_router_logits=True, output_hidden_states=True, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return out, hidden, routers


def run_reference(arch, model, input_ids):
    cfg = model.config
    out, hidden, routers = forward_capture(model, input_ids)
    n_layers = cfg.num_hidden_layers
    moe_layers = [i for i, _ in router_modules(model)]
    top_k = cfg.num_experts_per_tok
    norm_topk = renormalises(arch, cfg)

    assert len(hidden) == n_layers
    assert out.router_logits is not None and len(out.router_logits) == len(moe_layers), \
        (len(out.router_logits or ()), moe_layers)
    # hidden_states = (embeddings, out_0, ..., out_{L-2}, norm(out_{L-1}))
    hs = out.hidden_states
    assert len(hs) == n_layers + 1
    for i in range(n_layers - 1):
        assert torch.equal(hs[i + 1], hidden[i]), f"hook/hidden_states mismatch at layer {i}"
    assert torch.equal(hs[-1], model.model.norm(hidden[n_layers - 1]))

    ref = OrderedDict()
    ref["input_ids"] = input_ids.to(torch.int64).contiguous()
    ref["logits"] = out.logits.float().contiguous()
    ref["embeddings"] = hs[0].float().contiguous()
    for i in range(n_layers):
        ref[f"hidden.{i}"] = hidden[i].float().contiguous()
    ref["final_norm"] = hs[-1].float().contiguous()
    margins = {}
    for (i, logits), (j, (hook_logits, hook_w, hook_ids)) in zip(zip(moe_layers, out.router_logits),
                                                                 sorted(routers.items())):
        assert i == j and torch.equal(logits, hook_logits)
        if arch in SIGMOID_ARCHS:
            # Glm4MoeTopkRouter picks with topk(sorted=False): compare as sets, record by decreasing choice score.
            gate = dict(router_modules(model))[i]
            ids, weights = sigmoid_route(gate, logits)
            order = hook_ids.to(torch.int64).argsort(-1)
            mine = ids.argsort(-1)
            assert torch.equal(ids.gather(1, mine), hook_ids.to(torch.int64).gather(1, order)), \
                f"topk ids recompute mismatch at layer {i}"
            assert torch.allclose(weights.gather(1, mine), hook_w.float().gather(1, order), rtol=1e-6, atol=0), \
                f"topk weights recompute mismatch at layer {i}"
            margin = sigmoid_margin(gate, logits)
        else:
            ids, weights = route(arch, logits, top_k, norm_topk)
            assert torch.equal(ids, hook_ids.to(torch.int64)), f"topk ids recompute mismatch at layer {i}"
            assert torch.equal(weights, hook_w.float()), f"topk weights recompute mismatch at layer {i}"
            margin = topk_margin(logits, top_k)
        assert logits.shape == (input_ids.numel(), num_experts(cfg))
        ref[f"router_logits.{i}"] = logits.float().contiguous()
        ref[f"topk_ids.{i}"] = ids.contiguous()
        ref[f"topk_weights.{i}"] = weights.contiguous()
        ref[f"topk_margin.{i}"] = margin
        margins[str(i)] = float(ref[f"topk_margin.{i}"].min())
    return ref, moe_layers, margins


def params_equal(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), set(sa.keys()) ^ set(sb.keys())
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), f"parameter {k} differs"


def clean_out_dir(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(out_dir):
        if (name.startswith("model") and (name.endswith(".safetensors") or name.endswith(".index.json"))) or \
                name in ("config.json", "generation_config.json", "reference.safetensors", "reference.json"):
            os.remove(os.path.join(out_dir, name))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=ARCHS)
    ap.add_argument("--variant")
    ap.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    ap.add_argument("--out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layout", choices=LAYOUTS, default="saved",
                    help="saved: as written by save_pretrained; per-expert: hub layout; fused: gate_up_proj/down_proj")
    ap.add_argument("--experts-impl", default="grouped_mm", choices=("grouped_mm", "eager", "batched_mm"),
                    help="transformers experts implementation for the main outputs (grouped_mm = transformers "
                         "default); alt_logits use eager (or grouped_mm if eager is the main one)")
    ap.add_argument("--skip-layout-check", action="store_true",
                    help="only verify the requested layout, not all three")
    ap.add_argument("--list-variants", action="store_true")
    ap.add_argument("--routing", action="append", default=[],
                    help="a routing rule (top-k:K, probmoe:A:B, top-p:P[:A:B], threshold:M[:A:B]) whose logits and "
                         "per-token k are recorded too (repeatable)")
    ap.add_argument("--threshold", type=float, default=None,
                    help="the probability threshold of every MoE layer for threshold rules (default: the one of "
                         "0.05, 0.055, ..., 0.2 farthest from every token's routing probabilities)")
    args = ap.parse_args(argv)

    if args.list_variants:
        for arch in ARCHS:
            for variant in VARIANTS[arch]:
                print(f"{arch} {variant}")
        return 0
    if not (args.arch and args.variant and args.out):
        ap.error("--arch, --variant and --out are required")
    if args.arch == "gpt_oss" and args.layout == "per-expert":
        ap.error("gpt_oss checkpoints have no per-expert layout (saved = fused)")
    if args.arch in SIGMOID_ARCHS and args.routing:
        ap.error(f"{args.arch}: dynamic-k routing rules are defined for softmax routers only")
    if args.variant not in VARIANTS[args.arch]:
        ap.error(f"unknown variant {args.variant!r} for {args.arch}; known: {', '.join(VARIANTS[args.arch])}")

    dtype = DTYPES[args.dtype]
    alt_impl = "eager" if args.experts_impl != "eager" else "grouped_mm"
    out_dir = os.path.abspath(args.out)
    clean_out_dir(out_dir)

    # 1. build with transformers, deterministic big init, save sharded.
    config = make_config(args.arch, args.variant)
    torch.manual_seed(args.seed)
    if is_multimodal(args.arch, args.variant):
        built = Qwen3_5MoeForConditionalGeneration._from_config(
            config, dtype=torch.float32, attn_implementation="eager", experts_implementation=args.experts_impl)
    else:
        built = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager",
                                                 experts_implementation=args.experts_impl)
    init_weights(built, args.seed)
    built = built.to(dtype)
    built.config.dtype = dtype
    built.eval()
    total_bytes = sum(p.numel() * p.element_size() for p in built.parameters())
    shard_bytes = max(16 * 1024, total_bytes // 3)  # -> 3-4 shards
    built.save_pretrained(out_dir, safe_serialization=True, max_shard_size=f"{shard_bytes // 1024}KB")
    n_shards = len([n for n in os.listdir(out_dir) if n.endswith(".safetensors")])
    assert n_shards >= 2 and os.path.exists(os.path.join(out_dir, "model.safetensors.index.json")), n_shards
    saved_layout = classify_layout(args.arch, out_dir)

    # 2. reference outputs from the checkpoint as saved (re-loaded from disk).
    gen = torch.Generator().manual_seed(args.seed + 1)
    seq_len = variant_seq_len(args.arch, args.variant)
    vocab = config.get_text_config().vocab_size
    input_ids = torch.randint(0, vocab, (BATCH, seq_len), generator=gen, dtype=torch.int64)
    base = load(out_dir, dtype, args.experts_impl)
    if dtype == torch.float32 and not is_multimodal(args.arch, args.variant):
        params_equal(built, base)
    ref, moe_layers, margins = run_reference(args.arch, base, input_ids)
    with torch.inference_mode():
        base.set_experts_implementation(alt_impl)
        alt_logits = base(input_ids=input_ids, use_cache=False).logits.float()
        base.set_experts_implementation(args.experts_impl)
    ref["alt_logits"] = alt_logits.contiguous()
    alt_diff = float((alt_logits - ref["logits"]).abs().max())

    # 2b. the same model with each routing rule applied to its routers.
    rules = []
    def with_rule(rule, threshold):
        thresholds = {i: threshold for i in moe_layers}
        with routing_reference.apply_rule(base, args.arch, rule, thresholds) as seen, torch.inference_mode():
            logits = base(input_ids=input_ids, use_cache=False).logits.float().contiguous()
        return logits, seen

    for n, rule in enumerate(args.routing):
        threshold = None
        if rule.startswith("threshold"):
            threshold = args.threshold
            if threshold is None:  # a tie within reach of another summation order would make k differ
                threshold = max((0.05 + 0.005 * j for j in range(31)), key=lambda t: with_rule(rule, t)[1]["margin"])
        logits, seen = with_rule(rule, threshold)
        ref[f"rule_logits.{n}"] = logits
        for i in moe_layers:
            ref[f"rule_k.{n}.{i}"] = seen["k"][i].contiguous()
        rules.append(dict(rule=rule, threshold=threshold, margin=seen["margin"]))

    # 3. every layout must load and give bit-identical weights and logits (exact: one process, the same
    #    in-memory parameters, the same kernels and threads).
    layouts = [args.layout] if args.skip_layout_check else list(LAYOUTS)
    if args.arch == "gpt_oss":  # one expert layout (fused, as saved)
        layouts = [layout for layout in layouts if layout != "per-expert"]
    for layout in layouts:
        with tempfile.TemporaryDirectory(prefix=f"moeref_{layout}_") as tmp:
            for name in os.listdir(out_dir):
                if name.startswith("model") or name.endswith("config.json"):
                    shutil.copy2(os.path.join(out_dir, name), tmp)
            rewrite_layout(args.arch, tmp, layout, shard_bytes)
            if layout != "saved":
                assert classify_layout(args.arch, tmp) == layout
            other = load(tmp, dtype, args.experts_impl)
            params_equal(base, other)
            with torch.inference_mode():
                logits = other(input_ids=input_ids, use_cache=False).logits.float()
            assert torch.equal(logits, ref["logits"]), f"layout {layout}: logits differ"
            del other

    # 4. final layout in DIR (verified once more in place).
    rewrite_layout(args.arch, out_dir, args.layout, shard_bytes)
    final_layout = classify_layout(args.arch, out_dir)
    if args.layout != "saved":
        other = load(out_dir, dtype, args.experts_impl)
        with torch.inference_mode():
            assert torch.equal(other(input_ids=input_ids, use_cache=False).logits.float(), ref["logits"])
        del other

    cfg = base.config
    n_layers = cfg.num_hidden_layers
    meta = OrderedDict(
        arch=args.arch,
        variant=args.variant,
        dtype=args.dtype,
        seed=args.seed,
        layout=args.layout,
        expert_layout=final_layout,
        saved_expert_layout=saved_layout,
        moe_layers=moe_layers,
        dense_layers=[i for i in range(n_layers) if i not in moe_layers],
        num_layers=n_layers,
        num_experts=num_experts(cfg),
        top_k=cfg.num_experts_per_tok,
        norm_topk_prob=renormalises(args.arch, cfg),
        batch=BATCH,
        seq_len=seq_len,
        hidden_size=cfg.hidden_size,
        vocab_size=cfg.vocab_size,
        tie_word_embeddings=bool(cfg.tie_word_embeddings),
        rope_parameters=dict(cfg.rope_parameters),
        sliding_window=getattr(cfg, "sliding_window", None) or None,
        attn_implementation="eager",
        experts_implementation=args.experts_impl,
        alt_experts_implementation=alt_impl,
        alt_logits_max_abs_diff=alt_diff,
        min_topk_margin=margins,
        routing=rules,
        hidden_semantics="hidden.<i> = output of decoder layer i before the final norm; "
                         "final_norm = model.norm(hidden.<L-1>); embeddings = embed_tokens(input_ids)",
        tensors=list(ref.keys()),
        num_shards=len([n for n in os.listdir(out_dir) if n.endswith(".safetensors")]),
        transformers_version=transformers.__version__,
        torch_version=torch.__version__,
    )
    save_file(ref, os.path.join(out_dir, "reference.safetensors"),
              metadata={"arch": args.arch, "variant": args.variant, "dtype": args.dtype})
    with open(os.path.join(out_dir, "reference.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(json.dumps({k: meta[k] for k in ("arch", "variant", "dtype", "layout", "moe_layers", "num_shards",
                                           "alt_logits_max_abs_diff", "min_topk_margin")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
