"""Run inside the steering-vectors venv (transformers < 5): train a steering vector with the
`steering-vectors` package on a saved model and apply it; print the results as JSON.

Usage: python steering_vectors_side.py MODEL_DIR SPEC_JSON  (spec: pairs, layer, multiplier,
prompt, max_new_tokens, special_tokens)."""

import json
import sys

import torch
from steering_vectors import train_steering_vector
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast


def main() -> None:
    model_dir, spec_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as handle:
        spec = json.load(handle)
    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    # transformers 5 saves the tokenizer under a class name 4.x lacks: load its tokenizer.json
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=f"{model_dir}/tokenizer.json",
                                        **spec["special_tokens"])
    layer = spec["layer"]
    vector = train_steering_vector(model, tokenizer, [tuple(p) for p in spec["pairs"]],
                                   layers=[layer], layer_type="decoder_block",
                                   read_token_index=-1)
    ids = torch.tensor([tokenizer(spec["prompt"])["input_ids"]])
    with torch.no_grad(), vector.apply(model, multiplier=spec["multiplier"]):
        logits = model(input_ids=ids).logits[0]
        generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                   max_new_tokens=spec["max_new_tokens"], do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)
    print(json.dumps({"vector": vector.layer_activations[layer].tolist(),
                      "logits": logits.tolist(),
                      "generated": generated[0, ids.shape[1]:].tolist()}))


if __name__ == "__main__":
    main()
