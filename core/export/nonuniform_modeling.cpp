// The Python modeling file written next to a non-uniform export. Stock transformers builds every
// MoE layer with config.num_experts; these subclasses rebuild each MoE block from a copy of the
// config holding that layer's count (config.num_experts_per_layer), before weights are loaded,
// so from_pretrained(..., trust_remote_code=True) loads the checkpoint with no extra code.
#include "export/exporter.h"

#include <map>

namespace moeatlas {

namespace {

const char* const kModelingSource
    = R"PY(# modeling_moeatlas.py: written by MoE Atlas for an export whose MoE layers keep different
# numbers of routed experts. config.num_experts_per_layer[i] is layer i's count (0 = dense
# layer). Load with AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).
import copy

from transformers.models.mixtral import modeling_mixtral
from transformers.models.olmoe import modeling_olmoe
from transformers.models.qwen2_moe import modeling_qwen2_moe
from transformers.models.qwen3_moe import modeling_qwen3_moe


def _rebuild_moe_blocks(model, config, block_cls, count_key):
    counts = list(config.num_experts_per_layer)
    if len(counts) != len(model.model.layers):
        raise ValueError(f"num_experts_per_layer has {len(counts)} entries for {len(model.model.layers)} layers")
    for i, layer in enumerate(model.model.layers):
        if not isinstance(layer.mlp, block_cls):
            continue
        layer_config = copy.deepcopy(config)
        setattr(layer_config, count_key, int(counts[i]))
        layer.mlp = block_cls(layer_config)


def _make(base_cls, block_cls, count_key):
    class MoeAtlasForCausalLM(base_cls):
        def __init__(self, config):
            super().__init__(config)
            _rebuild_moe_blocks(self, config, block_cls, count_key)
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
)PY";

} // namespace

const std::string& nonUniformModelingSource()
{
    static const std::string source(kModelingSource);
    return source;
}

std::string nonUniformClassName(const std::string& modelType)
{
    static const std::map<std::string, std::string> names
        = { { "mixtral", "MoeAtlasMixtralForCausalLM" }, { "qwen2_moe", "MoeAtlasQwen2MoeForCausalLM" },
              { "qwen3_moe", "MoeAtlasQwen3MoeForCausalLM" }, { "olmoe", "MoeAtlasOlmoeForCausalLM" } };
    const auto it = names.find(modelType);
    return it == names.end() ? std::string() : it->second;
}

} // namespace moeatlas
