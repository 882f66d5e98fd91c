// The Python modeling file written next to a non-uniform or ragged export, or one with a dynamic
// routing rule. Stock transformers builds every MoE layer with config.num_experts experts of one
// width; these subclasses rebuild each MoE block from a copy of the config holding that layer's
// count (num_experts_per_layer) and give its experts their own widths (moeatlas_expert_widths)
// before weights are loaded, so from_pretrained(..., trust_remote_code=True) loads the checkpoint
// with no extra code. The stock block's router and forward are kept, so routing is exactly the
// stock one, unless config.moeatlas_routing names a rule with a per-token k (docs/decisions.md,
// decision 29): then each router's class becomes a subclass whose forward gives every token its own
// k (routing_rule.h's ruleTokenK) and weight 0 to the slots past it.
#include "export/exporter.h"

#include <map>

namespace moeatlas {

namespace {

const char* const kModelingSource
    = R"PY(# modeling_moeatlas.py: written by MoE Atlas for an export that stock transformers cannot build.
# config.num_experts_per_layer[i] (when present): routed experts of decoder layer i (0 = dense layer).
# config.moeatlas_expert_widths[i] (when present): the intermediate width of each routed expert of
# layer i (null for a dense layer); expert k is stored as model.layers.<i>.mlp.experts.<k>.
# {gate,up,down}_proj.weight and a width-0 expert contributes nothing (the router still weighs it).
# config.moeatlas_routing (when present): {"rule", "kind": probmoe | top-p | threshold, "k_min", "k_max",
# "p", "mean_k", "thresholds": {"<layer>": t}}: every token of a MoE layer is routed to its own k experts,
# k = clamp(k_raw, k_min, k_max) with k_raw = the number of positive router logits (probmoe), the smallest
# k whose top-k routing probabilities add up to p in float64 (top-p), or the number of routing
# probabilities >= the layer's threshold (threshold; every MoE layer has one). The
# router's softmax, its top-k_max (config.num_experts_per_tok) and weights are the stock ones; slots past
# a token's k get weight 0 (before the stock renormalisation, when the model renormalises).
# Load with AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).
import copy

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.models.mixtral import modeling_mixtral
from transformers.models.olmoe import modeling_olmoe
from transformers.models.qwen2_moe import modeling_qwen2_moe
from transformers.models.qwen3_moe import modeling_qwen3_moe
from transformers.models.qwen3_5_moe import modeling_qwen3_5_moe


class MoeAtlasRaggedExpert(nn.Module):
    def __init__(self, config, width):
        super().__init__()
        self.width = width
        self.gate_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.down_proj = nn.Linear(width, config.hidden_size, bias=False)
        self.act_fn = ACT2FN[config.hidden_act]  # here, not on the list: a list's children must all be experts

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class MoeAtlasRaggedExperts(nn.ModuleList):
    """Routed experts of one layer with their own widths. Called like the stock fused experts module
    (hidden [T, H], top_k_index [T, k], top_k_weights [T, k]) and, like it, adds each hit expert's
    output times its routing weight, experts in ascending order."""

    def __init__(self, config, widths):
        super().__init__(MoeAtlasRaggedExpert(config, int(w)) for w in widths)
        self.num_experts = len(widths)

    def forward(self, hidden_states, top_k_index, top_k_weights):
        final_hidden_states = torch.zeros_like(hidden_states)
        for expert_idx, expert in enumerate(self):
            if expert.width == 0:
                continue  # contributes exactly 0; its routing weight still came out of the softmax
            token_idx, top_k_pos = torch.where(top_k_index == expert_idx)
            if token_idx.numel() == 0:
                continue
            current = expert(hidden_states[token_idx]) * top_k_weights[token_idx, top_k_pos, None]
            final_hidden_states.index_add_(0, token_idx, current.to(final_hidden_states.dtype))
        return final_hidden_states


class MoeAtlasRuleRouter:
    """Mixin before a stock top-k router class: the same logits, softmax and top-k_max, then each token
    keeps only its first k slots (the others get weight 0, and their expert adds nothing)."""

    moeatlas_routing = None  # config.moeatlas_routing
    moeatlas_threshold = None  # this layer's threshold (threshold rules)
    moeatlas_renormalize = True  # Mixtral always; the others per norm_topk_prob
    moeatlas_cast = True  # weights back to the logits' dtype (all but Mixtral)

    def moeatlas_token_k(self, router_logits, top_value):
        rule = self.moeatlas_routing
        kind = rule["kind"]
        if kind == "probmoe":
            k = (router_logits > 0).sum(dim=-1)
        elif kind == "top-p":
            mass = top_value.double().cumsum(dim=-1)
            before = torch.cat([torch.zeros_like(mass[:, :1]), mass[:, :-1]], dim=-1)
            k = (before < float(rule["p"])).sum(dim=-1)
        elif kind == "threshold":
            k = (top_value.double() >= float(self.moeatlas_threshold)).sum(dim=-1)
        else:
            raise ValueError(f"moeatlas_routing: unknown kind {kind!r}")
        return k.clamp(int(rule["k_min"]), int(rule["k_max"]))

    def forward(self, hidden_states):
        hidden_states = hidden_states.reshape(-1, self.hidden_dim)
        router_logits = F.linear(hidden_states, self.weight)  # (tokens, experts)
        router_probs = F.softmax(router_logits, dtype=torch.float, dim=-1)
        top_value, top_index = torch.topk(router_probs, self.top_k, dim=-1)  # (tokens, k_max), descending
        k = self.moeatlas_token_k(router_logits, top_value)
        slot = torch.arange(self.top_k, device=top_value.device)
        top_value = top_value.masked_fill(slot[None, :] >= k[:, None], 0.0)
        if self.moeatlas_renormalize:
            top_value = top_value / top_value.sum(dim=-1, keepdim=True)
        if self.moeatlas_cast:
            top_value = top_value.to(router_logits.dtype)
        return router_logits, top_value, top_index


def _install_routing(model, config, block_cls):
    routing = getattr(config, "moeatlas_routing", None)
    if routing is None:
        return
    if int(routing["k_max"]) != int(config.num_experts_per_tok):
        raise ValueError(f"moeatlas_routing k_max {routing['k_max']} != num_experts_per_tok "
                         f"{config.num_experts_per_tok}")
    thresholds = routing.get("thresholds") or {}
    mixtral = config.model_type == "mixtral"
    for i, layer in enumerate(model.model.layers):
        if not isinstance(layer.mlp, block_cls):
            continue
        gate = layer.mlp.gate
        base = type(gate)
        gate.__class__ = type("MoeAtlasRule" + base.__name__, (MoeAtlasRuleRouter, base), {"__module__": __name__})
        gate.moeatlas_routing = routing
        gate.moeatlas_threshold = thresholds.get(str(i))
        if routing["kind"] == "threshold" and gate.moeatlas_threshold is None:
            raise ValueError(f"moeatlas_routing.thresholds has no threshold for MoE layer {i}")
        # Qwen3.5-MoE's router always renormalises (it has no norm_topk_prob).
        gate.moeatlas_renormalize = mixtral or config.model_type.startswith("qwen3_5_moe") or \
            bool(getattr(gate, "norm_topk_prob", False))
        gate.moeatlas_cast = not mixtral


def _rebuild_moe_blocks(model, config, block_cls, count_key):
    layers = model.model.layers
    counts = getattr(config, "num_experts_per_layer", None)
    widths = getattr(config, "moeatlas_expert_widths", None)
    for key, value in (("num_experts_per_layer", counts), ("moeatlas_expert_widths", widths)):
        if value is not None and len(value) != len(layers):
            raise ValueError(f"{key} has {len(value)} entries for {len(layers)} layers")
    for i, layer in enumerate(layers):
        if not isinstance(layer.mlp, block_cls):
            continue
        if counts is not None:
            layer_config = copy.deepcopy(config)
            setattr(layer_config, count_key, int(counts[i]))
            layer.mlp = block_cls(layer_config)
        if widths is not None:
            experts = layer.mlp.gate.weight.shape[0]
            if widths[i] is None or len(widths[i]) != experts:
                raise ValueError(f"moeatlas_expert_widths[{i}] must list {experts} widths, got {widths[i]}")
            layer.mlp.experts = MoeAtlasRaggedExperts(config, widths[i])
    if widths is not None:
        # transformers' checkpoint conversion for this model_type merges per-expert tensors
        # model.layers.*.mlp.experts.<k>.* into fused gate_up_proj/down_proj (qwen2_moe, qwen3_moe,
        # olmoe). 5.24 falls back to the stored names when the fused target does not exist; making
        # the inner model a custom class (which gets no conversions) keeps loading independent of that.
        inner = type(model.model)
        model.model.__class__ = type("MoeAtlas" + inner.__name__, (inner,), {"__module__": __name__})


def _make(base_cls, block_cls, count_key):
    class MoeAtlasForCausalLM(base_cls):
        def __init__(self, config):
            super().__init__(config)
            _rebuild_moe_blocks(self, config, block_cls, count_key)
            _install_routing(self, config, block_cls)
            self.post_init()

    MoeAtlasForCausalLM.__name__ = "MoeAtlas" + base_cls.__name__
    MoeAtlasForCausalLM.__qualname__ = MoeAtlasForCausalLM.__name__
    return MoeAtlasForCausalLM


MoeAtlasMixtralForCausalLM = _make(modeling_mixtral.MixtralForCausalLM, modeling_mixtral.MixtralSparseMoeBlock,
                                   "num_local_experts")
MoeAtlasQwen2MoeForCausalLM = _make(modeling_qwen2_moe.Qwen2MoeForCausalLM, modeling_qwen2_moe.Qwen2MoeSparseMoeBlock,
                                    "num_experts")
MoeAtlasQwen3MoeForCausalLM = _make(modeling_qwen3_moe.Qwen3MoeForCausalLM, modeling_qwen3_moe.Qwen3MoeSparseMoeBlock,
                                    "num_experts")
MoeAtlasOlmoeForCausalLM = _make(modeling_olmoe.OlmoeForCausalLM, modeling_olmoe.OlmoeSparseMoeBlock, "num_experts")
MoeAtlasQwen3_5MoeForCausalLM = _make(modeling_qwen3_5_moe.Qwen3_5MoeForCausalLM,
                                      modeling_qwen3_5_moe.Qwen3_5MoeSparseMoeBlock, "num_experts")
)PY";

} // namespace

const std::string& nonUniformModelingSource()
{
    static const std::string source(kModelingSource);
    return source;
}

std::string nonUniformClassName(const std::string& modelType)
{
    static const std::map<std::string, std::string> names = { { "mixtral", "MoeAtlasMixtralForCausalLM" },
        { "qwen2_moe", "MoeAtlasQwen2MoeForCausalLM" }, { "qwen3_moe", "MoeAtlasQwen3MoeForCausalLM" },
        { "olmoe", "MoeAtlasOlmoeForCausalLM" }, { "qwen3_5_moe_text", "MoeAtlasQwen3_5MoeForCausalLM" } };
    const auto it = names.find(modelType);
    return it == names.end() ? std::string() : it->second;
}

} // namespace moeatlas
