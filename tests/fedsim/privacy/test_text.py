"""Token-level exponential mechanisms (EM, AEM) over input embeddings: fedsim/privacy/text.py."""
import math
import pickle
import re
from collections import Counter

import numpy as np
import pytest
from scipy.stats import chisquare
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from fedsim.privacy.text import TextPrivacyError, TextPrivacyKit, TokenPerturber

CLUSTERS = [
    "river ocean lake stream sea pond creek bay brook lagoon".split(),
    "tree woods forest grove oak pine birch maple cedar elm".split(),
    "cat dog bird fish horse cow sheep goat mouse rabbit".split(),
    "red blue green yellow purple orange black white brown pink".split(),
]
OTHER_WORDS = "the a of to and is in from into flows near USA NASA".split()
SPECIALS = ["[PAD]", "[EOS]", "[UNK]"]
PUNCTUATION = [".", ",", "?", "!"]
NUMBERS = [str(i) for i in range(100)]
CLUSTER_WORDS = [w for cluster in CLUSTERS for w in cluster]


def word_level_tokenizer() -> PreTrainedTokenizerFast:
    """Words, numbers 0..99, punctuation, pad/eos/unk and <slot7> specials; whitespace pre-tokenizer."""
    vocab = {token: i for i, token in enumerate(SPECIALS + CLUSTER_WORDS + OTHER_WORDS + NUMBERS + PUNCTUATION)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens(["<slot7>"])  # a special token whose text holds a digit
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", eos_token="[EOS]",
                                   unk_token="[UNK]")


def clustered_embeddings(tokenizer, dim: int = 16, seed: int = 0) -> np.ndarray:
    """Words of one cluster share a centre (cosine neighbours); every other row is random."""
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(len(tokenizer), dim))
    vocab = tokenizer.get_vocab()
    for cluster in CLUSTERS:
        centre = 3.0 * rng.normal(size=dim)
        for word in cluster:
            matrix[vocab[word]] = centre + rng.normal(size=dim)
    return matrix


@pytest.fixture(scope="module")
def tokenizer():
    return word_level_tokenizer()


@pytest.fixture(scope="module")
def embeddings(tokenizer):
    return clustered_embeddings(tokenizer)


@pytest.fixture(scope="module")
def kit(tokenizer, embeddings):
    # top_m covers the whole word pool, so AEM candidate sets are exact (never capped)
    return TextPrivacyKit.from_embeddings(tokenizer, embeddings, top_k=5, top_m=100)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return a @ b.T


def replacement_counts(perturber, token: str, n_samples: int, seed: int) -> Counter:
    """Outputs of n_samples independent perturbations of one token."""
    texts = [" ".join([token] * 500)] * (n_samples // 500)
    results = perturber.perturb_batch(texts, np.random.default_rng(seed))
    return Counter(word for result in results for word in result.text.split())


@pytest.mark.parametrize("token", ["river", "oak", "the", "42", "7", "123456789012345"])
@pytest.mark.parametrize("eps", [1.0, 4.0])
def test_em_frequencies_match_closed_form(kit, tokenizer, embeddings, token, eps):
    candidates = kit.em_candidates(token)
    assert candidates[0] == token and len(candidates) >= 5
    if token.isdigit():
        values = np.array([float(c) for c in candidates])
        utility = -np.abs(values[:, None] - values[None, :])  # EM is scale-free: Δu scales with u
    else:
        vocab = tokenizer.get_vocab()
        rows = embeddings[[vocab[c] for c in candidates]]
        utility = cosine(rows, rows)
    sensitivity = (utility.max(axis=0) - utility.min(axis=0)).max()
    logits = eps * utility[0] / (2.0 * sensitivity)
    expected_p = np.exp(logits - logits.max())
    expected_p /= expected_p.sum()

    n_samples = 20_000
    counts = replacement_counts(TokenPerturber(kit, "em", eps), token, n_samples, seed=7)
    assert set(counts) <= set(candidates)
    observed = np.array([counts[c] for c in candidates])
    assert observed.sum() == n_samples
    assert chisquare(observed, n_samples * expected_p).pvalue > 1e-3


def test_em_groups_partition_the_vocabulary(kit):
    for pool_tokens in (CLUSTER_WORDS + OTHER_WORDS, NUMBERS[:10], NUMBERS[10:]):
        groups = {token: set(kit.em_candidates(token)) for token in pool_tokens}
        for token, group in groups.items():
            assert token in group and 5 <= len(group) <= 9
            assert all(groups[other] == group for other in group)  # disjoint groups
    assert kit.em_candidates("42")[0] == "42"
    assert set(kit.em_candidates("42")) == {"40", "41", "42", "43", "44"}  # numbers grouped by value
    assert set(kit.em_candidates("3")) == {"0", "1", "2", "3", "4"}
    assert set(kit.em_candidates("007")) == {"005", "006", "007", "008", "009"}  # zero-padded domain
    assert kit.em_candidates("123456")[1:] == ("123455", "123457", "123458", "123459")


def test_em_sensitivity_is_the_groups_range_not_one_or_two(kit):
    """The group of "42" spans u in [1 - 8/89, 1]: its Δu is 8/89, far from 1 or 2."""
    candidates = kit.em_candidates("42")
    values = np.array([float(c) for c in candidates])
    utility = 1.0 - 2.0 * np.abs(values[0] - values) / 89.0
    counts = replacement_counts(TokenPerturber(kit, "em", 4.0), "42", 20_000, seed=9)
    observed = np.array([counts[c] for c in candidates])
    for wrong_sensitivity in (1.0, 2.0):
        wrong_p = np.exp(4.0 * utility / (2.0 * wrong_sensitivity))
        wrong_p /= wrong_p.sum()
        assert chisquare(observed, 20_000 * wrong_p).pvalue < 1e-6


def test_aem_candidate_set_grows_as_eps_falls(kit):
    text = " ".join(CLUSTER_WORDS)
    mean_sizes = []
    for eps in (16.0, 8.0, 4.0, 2.0, 1.0):
        results = TokenPerturber(kit, "aem", eps).perturb_batch([text] * 150, np.random.default_rng(3))
        assert all(r.n_capped == 0 and r.status == "claimed" for r in results)
        mean_sizes.append(np.mean([s for r in results for s in r.candidate_set_sizes]))
    assert all(a < b for a, b in zip(mean_sizes, mean_sizes[1:])), mean_sizes


def test_aem_number_frequencies_match_closed_form(kit):
    """2-digit numbers: domain 10..99, R = 89; s* = 1 - 2|L|/R, L ~ Laplace(0, 2R/eps_lap),
    so C(50) = {x : |x - 50| <= |L|}. With |L| in [k, k+1) the candidate set is
    {x : |x - 50| <= k}: the output law is a finite mixture over k of EM at eps_em over
    that set (Δu = 2, u = 1 - 2|x - x'|/R).
    """
    eps, value_range = 8.0, 89.0
    eps_lap = eps_em = eps / 2
    scale = 2.0 * value_range / eps_lap
    values = np.arange(10.0, 100.0)
    distance = np.abs(values - 50.0)
    weights = np.exp(eps_em * (1.0 - 2.0 * distance / value_range) / (2.0 * 2.0))
    expected_p = np.zeros(values.size)
    for k in range(50):  # k = 49 covers the whole domain: it takes the whole tail of |L|
        p_k = math.exp(-k / scale) - (math.exp(-(k + 1) / scale) if k < 49 else 0.0)
        inside = distance <= k
        expected_p += p_k * np.where(inside, weights, 0.0) / weights[inside].sum()
    counts = replacement_counts(TokenPerturber(kit, "aem", eps), "50", 20_000, seed=13)
    observed = np.array([counts[str(int(v))] for v in values])
    assert observed.sum() == 20_000
    assert chisquare(observed, 20_000 * expected_p).pvalue > 1e-3


def test_aem_word_candidate_sets_match_laplace_threshold(kit, tokenizer, embeddings):
    """|C(t)| = #{t' : cos(e, e_t') >= cos(e, e + Laplace(0, 2Δf/eps_lap))}, simulated here."""
    eps, n_samples = 4.0, 6_000
    vocab = tokenizer.get_vocab()
    pool_rows = embeddings[[vocab[w] for w in kit.word_surfaces]]
    ranges = pool_rows.max(axis=0) - pool_rows.min(axis=0)
    e = embeddings[vocab["river"]]
    rng = np.random.default_rng(21)
    noisy = e + rng.laplace(0.0, 2.0 * ranges / (eps / 2), size=(n_samples, e.size))
    thresholds = cosine(e[None, :], noisy)[0]
    similarities = cosine(e[None, :], pool_rows)[0]
    simulated = (similarities[None, :] >= thresholds[:, None]).sum(axis=1)

    results = TokenPerturber(kit, "aem", eps).perturb_batch([" ".join(["river"] * 500)] * (n_samples // 500),
                                                          np.random.default_rng(22))
    sizes = np.array([s for r in results for s in r.candidate_set_sizes])
    standard_error = math.sqrt(simulated.var() / n_samples + sizes.var() / sizes.size)
    assert abs(sizes.mean() - simulated.mean()) < 4 * standard_error


def test_aem_caps_candidate_sets_at_top_m(tokenizer, embeddings):
    small = TextPrivacyKit.from_embeddings(tokenizer, embeddings, top_k=5, top_m=8)
    results = TokenPerturber(small, "aem", 1.0).perturb_batch([" ".join(CLUSTER_WORDS)] * 20,
                                                            np.random.default_rng(0))
    sizes = [s for r in results for s in r.candidate_set_sizes]
    assert max(sizes) == 8 and min(sizes) >= 1
    assert sum(r.n_capped for r in results) > 0


def test_aem_eps_split_and_reference_preset(kit):
    split = TokenPerturber(kit, "aem", 3.0, aem_lap_fraction=0.25)
    assert split.eps_lap == pytest.approx(0.75) and split.eps_em == pytest.approx(2.25)
    assert split.sensitivity == 2.0
    reference = TokenPerturber(kit, "aem", 3.0, reference=True)
    assert (reference.eps_lap, reference.eps_em, reference.sensitivity) == (3.0, 3.0, 1.0)
    result = reference.perturb("the river flows into the ocean", np.random.default_rng(0))
    assert result.status == "claimed" and result.eps_per_token == 3.0 and result.mechanism == "aem"
    assert TokenPerturber(kit, "em", 3.0).perturb("the river", np.random.default_rng(0)).status == "proven"


@pytest.mark.parametrize("mechanism", ["em", "aem"])
def test_eps_inf_returns_exact_input(kit, mechanism):
    text = "  The river,\n\tflows  into 42 oceans [EOS] zz?!  "
    result = TokenPerturber(kit, mechanism, math.inf).perturb(text, np.random.default_rng(0))
    assert result.text == text
    assert result.n_changed == 0 and result.n_perturbable > 0
    assert result.eps_per_token == math.inf and result.status == "proven"


@pytest.mark.parametrize("mechanism", ["em", "aem"])
def test_numbers_replaced_by_nearby_numbers_more_often(kit, mechanism):
    counts = replacement_counts(TokenPerturber(kit, mechanism, 8.0), "50", 20_000, seed=11)
    assert all(word.isdigit() and len(word) == 2 for word in counts)  # 2-digit numbers only
    distance_rate = Counter()
    for value in range(10, 100):
        distance_rate[min(abs(value - 50), 20)] += counts[str(value)]
    near = sum(distance_rate[d] for d in (1, 2)) / 4           # 4 numbers at distance 1..2
    far = distance_rate[20] / sum(1 for v in range(10, 100) if abs(v - 50) >= 20)
    assert near > 2 * far


def test_excluded_classes_never_change_and_count_as_unprotected(tokenizer, embeddings):
    excluding = TextPrivacyKit.from_embeddings(tokenizer, embeddings, top_k=5, top_m=100,
                                               exclude={"numbers", "short_words", "stopwords"},
                                               exclude_tokens={"river"})
    summary = excluding.summary()
    assert summary["perturb_numbers"] is False
    assert summary["excluded_words"]["exclude_tokens"] == 1 and summary["excluded_words"]["short_words"] > 0
    text = "the river flows near 42 maple trees and a horse ."
    words = text.split()
    kept = {"the", "river", "42", "and", "a", "."}  # excluded or punctuation
    # "trees" is not in the vocabulary: [UNK], released in clear
    results = TokenPerturber(excluding, "em", 0.5).perturb_batch([text] * 300, np.random.default_rng(5))
    changed_positions = set()
    for result in results:
        out = result.text.split()
        assert len(out) == len(words)
        for i, (before, after) in enumerate(zip(words, out)):
            if before in kept or before == "trees":
                assert after == before
            elif after != before:
                changed_positions.add(i)
                assert after not in kept
        assert result.n_tokens == 11 and result.n_perturbable == 4  # flows, near, maple, horse
        assert result.unprotected_fraction == pytest.approx(7 / 11)
    assert changed_positions == {2, 3, 5, 9}
    assert excluding.unprotected_fraction([text]) == pytest.approx(7 / 11)
    for excluded in ("river", "the", "42"):
        with pytest.raises(TextPrivacyError, match="not a perturbable word or number"):
            excluding.em_candidates(excluded)


def test_excluded_number_never_changes(tokenizer, embeddings):
    kit_2024 = TextPrivacyKit.from_embeddings(tokenizer, embeddings, top_k=5, top_m=100,
                                              exclude=(c for c in ["stopwords"]),  # any iterable
                                              exclude_tokens=(t for t in ["2024"]))
    with pytest.raises(TextPrivacyError, match="not a perturbable word or number"):
        kit_2024.em_candidates("2024")
    results = TokenPerturber(kit_2024, "em", 0.5).perturb_batch(["in 2024 from 2023 sheep"] * 50,
                                                              np.random.default_rng(1))
    assert all(r.text.split()[1] == "2024" and r.n_perturbable == 2 for r in results)  # 2023, sheep
    assert any(r.text.split()[3] != "2023" for r in results)


def test_default_kit_perturbs_numbers_and_short_words(kit):
    summary = kit.summary()
    assert summary["perturb_numbers"] and all(v == 0 for v in summary["excluded_words"].values())
    results = TokenPerturber(kit, "em", 0.5).perturb_batch(["a cat of 42"] * 50, np.random.default_rng(0))
    assert all(r.n_perturbable == 4 and r.unprotected_fraction == 0.0 for r in results)
    outputs = [r.text.split() for r in results]
    assert any(o[0] != "a" for o in outputs) and any(o[3] != "42" for o in outputs)


@pytest.mark.parametrize("mechanism", ["em", "aem"])
def test_special_tokens_never_change(kit, mechanism):
    text = "[EOS] river [PAD] ocean [UNK] cat [EOS]"
    results = TokenPerturber(kit, mechanism, 0.1).perturb_batch([text] * 100, np.random.default_rng(2))
    n_changed = 0
    for result in results:
        out = result.text.split()
        assert [out[i] for i in (0, 2, 4, 6)] == ["[EOS]", "[PAD]", "[UNK]", "[EOS]"]
        assert result.n_tokens == 7 and result.n_perturbable == 3
        n_changed += result.n_changed
    assert n_changed > 0


def test_special_token_digits_are_not_numbers(kit):
    text = "<slot7> river 7 [EOS]"
    results = TokenPerturber(kit, "em", 0.1).perturb_batch([text] * 100, np.random.default_rng(6))
    assert all(r.text.startswith("<slot7> ") and r.text.endswith(" [EOS]") for r in results)
    assert all(r.n_perturbable == 2 and r.unprotected_fraction == pytest.approx(0.5) for r in results)
    assert any(r.text.split()[2] != "7" for r in results)


def digit_split_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE that cuts numbers into single digits (as LLaMA, Mistral and Qwen do)."""
    corpus = ["In 2024 we sold 1234567 apples and 7 pears to 42 people in the market."] * 40
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False)])
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")


@pytest.mark.parametrize("mechanism", ["em", "aem"])
def test_numbers_split_into_digit_tokens_are_perturbed_whole(mechanism):
    split = digit_split_tokenizer()
    split_kit = TextPrivacyKit.from_embeddings(split, np.random.default_rng(0).normal(size=(len(split), 8)),
                                               top_k=3, top_m=50)
    assert split.tokenize(" 2024") == ["Ġ", "2", "0", "2", "4"]
    numbers_only = "2024 1234567, 007"
    assert split_kit.unprotected_fraction([numbers_only]) == pytest.approx(1 / 15)  # 14 digits, 1 comma
    too_long = "12345678901234567890"  # beyond MAX_DIGITS: left in clear
    assert split_kit.unprotected_fraction([too_long]) == 1.0

    text = f"In 2024 we sold 1234567 apples and 007 pears; id {too_long}."
    results = TokenPerturber(split_kit, mechanism, 1.0).perturb_batch([text] * 50, np.random.default_rng(8))
    runs = re.findall(r"[0-9]+", text)
    for result in results:
        out_runs = re.findall(r"[0-9]+", result.text)
        assert [len(r) for r in out_runs] == [len(r) for r in runs]
        assert out_runs[3] == too_long
        assert out_runs[0][0] != "0" and out_runs[1][0] != "0"  # "007" may become any of 000..999
        assert separators(result.text) == separators(text)
    assert sum(re.findall(r"[0-9]+", r.text)[1] != "1234567" for r in results) > 25


def test_invalid_parameters_raise_clear_errors(kit, tokenizer, embeddings):
    for eps in (0, -1.0, math.nan, "3", True, None):
        with pytest.raises(TextPrivacyError, match="eps must be a number > 0"):
            TokenPerturber(kit, "em", eps)
    for fraction in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(TextPrivacyError, match="aem_lap_fraction"):
            TokenPerturber(kit, "aem", 1.0, aem_lap_fraction=fraction)
    with pytest.raises(TextPrivacyError, match="mechanism must be"):
        TokenPerturber(kit, "laplace", 1.0)
    with pytest.raises(TextPrivacyError, match="does not apply to 'em'"):
        TokenPerturber(kit, "em", 1.0, reference=True)
    with pytest.raises(TextPrivacyError, match="leave aem_lap_fraction"):
        TokenPerturber(kit, "aem", 1.0, aem_lap_fraction=0.3, reference=True)
    perturber = TokenPerturber(kit, "em", 1.0)
    with pytest.raises(TextPrivacyError, match="sequence of strings"):
        perturber.perturb_batch("the river", np.random.default_rng(0))
    with pytest.raises(TextPrivacyError, match="numpy.random.Generator"):
        perturber.perturb("the river", 42)
    with pytest.raises(TextPrivacyError, match="must be strings"):
        perturber.perturb_batch(["ok", 3], np.random.default_rng(0))

    with pytest.raises(TextPrivacyError, match="unknown exclude class"):
        TextPrivacyKit.from_embeddings(tokenizer, embeddings, exclude={"nouns"})
    with pytest.raises(TextPrivacyError, match="not one string"):
        TextPrivacyKit.from_embeddings(tokenizer, embeddings, exclude="numbers")
    with pytest.raises(TextPrivacyError, match="exclude_tokens must hold strings"):
        TextPrivacyKit.from_embeddings(tokenizer, embeddings, exclude_tokens=[2024])
    with pytest.raises(TextPrivacyError, match="top_k"):
        TextPrivacyKit.from_embeddings(tokenizer, embeddings, top_k=1)
    with pytest.raises(TextPrivacyError, match="top_m"):
        TextPrivacyKit.from_embeddings(tokenizer, embeddings, top_k=10, top_m=5)
    with pytest.raises(TextPrivacyError, match=r"\[vocab, d\] matrix"):
        TextPrivacyKit.from_embeddings(tokenizer, embeddings[:, 0])
    with pytest.raises(TextPrivacyError, match="rows but the tokenizer uses token id"):
        TextPrivacyKit.from_embeddings(tokenizer, embeddings[:50])
    broken = embeddings.copy()
    broken[tokenizer.get_vocab()["river"]] = np.nan
    with pytest.raises(TextPrivacyError, match="NaN"):
        TextPrivacyKit.from_embeddings(tokenizer, broken)


def test_zero_embedding_rows_are_dropped_and_reported(tokenizer, embeddings):
    zeroed = embeddings.copy()
    zeroed[tokenizer.get_vocab()["elm"]] = 0.0
    dropped = TextPrivacyKit.from_embeddings(tokenizer, zeroed, top_k=5, top_m=100)
    assert dropped.summary()["n_zero_norm_dropped"] == 1
    assert dropped.unprotected_fraction(["elm oak"]) == pytest.approx(0.5)


@pytest.mark.parametrize("mechanism", ["em", "aem"])
def test_deterministic_given_rng_seed(kit, mechanism):
    texts = ["the river flows into the ocean near 42 oak trees", "a blue bird and 7 red fish"] * 20
    perturber = TokenPerturber(kit, mechanism, 1.0)
    first = perturber.perturb_batch(texts, np.random.default_rng(123))
    again = perturber.perturb_batch(texts, np.random.default_rng(123))
    other = perturber.perturb_batch(texts, np.random.default_rng(124))
    assert first == again
    assert [r.text for r in first] != [r.text for r in other]


def test_batch_counts_match_single_prompt_counts(kit):
    texts = ["the river flows into the ocean .", "zz 42 , cat [EOS]", ""]
    perturber = TokenPerturber(kit, "em", 2.0)
    batch = perturber.perturb_batch(texts, np.random.default_rng(0))
    for text, result in zip(texts, batch):
        single = perturber.perturb(text, np.random.default_rng(0))
        assert (single.n_tokens, single.n_perturbable) == (result.n_tokens, result.n_perturbable)
        assert result.unprotected_fraction == pytest.approx(kit.unprotected_fraction([text]))
        assert len(result.candidate_set_sizes) == result.n_perturbable
    assert (batch[2].text, batch[2].n_tokens, batch[2].unprotected_fraction) == ("", 0, 0.0)


def separators(text: str) -> list[str]:
    """Everything between the words of a text."""
    return re.split(r"\w+", text)


def byte_level_tokenizer() -> PreTrainedTokenizerFast:
    corpus = ["The river flows into the ocean near the old oak trees and 42 lakes.",
              "A quick brown fox jumps over 7 lazy dogs; the cat sat on 1999 mats!"] * 40
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>")


@pytest.mark.parametrize("mechanism", ["em", "aem"])
def test_byte_level_bpe_keeps_untouched_text(mechanism):
    bpe = byte_level_tokenizer()
    bpe_kit = TextPrivacyKit.from_embeddings(bpe, np.random.default_rng(0).normal(size=(len(bpe), 8)),
                                             top_k=3, top_m=50)
    assert bpe_kit.summary()["decoder"] == "ByteLevel"
    assert set(bpe_kit.word_surfaces) >= {"river", "ocean", "the", "fox"}
    assert all(s.isalpha() for s in bpe_kit.word_surfaces)  # no byte-level marker characters
    text = "The river flows into the ocean,  near 42 lakes ($1999)!\n<eos> a fox\tjumps."
    perturber = TokenPerturber(bpe_kit, mechanism, 0.5)
    results = perturber.perturb_batch([text] * 30, np.random.default_rng(4))
    assert sum(r.n_changed for r in results) > 0
    for result in results:
        assert separators(result.text) == separators(text)
        assert "<eos>" in result.text and "($" in result.text
    assert TokenPerturber(bpe_kit, mechanism, math.inf).perturb(text, np.random.default_rng(0)).text == text


def test_chunked_neighbour_lists_match_brute_force(tokenizer, embeddings):
    one_row_chunks = TextPrivacyKit.from_embeddings(tokenizer, embeddings, top_k=5, top_m=12, chunk_bytes=1)
    default_chunks = TextPrivacyKit.from_embeddings(tokenizer, embeddings, top_k=5, top_m=12)
    pool_a, pool_b = one_row_chunks.word_pool, default_chunks.word_pool
    np.testing.assert_array_equal(pool_a.neighbour_idx, pool_b.neighbour_idx)
    np.testing.assert_array_equal(pool_a.group_idx, pool_b.group_idx)

    vocab = tokenizer.get_vocab()
    surfaces = one_row_chunks.word_surfaces
    sims = cosine(*(2 * [embeddings[[vocab[s] for s in surfaces]]]))
    for i in range(len(surfaces)):
        assert pool_a.neighbour_idx[i, 0] == i and pool_a.neighbour_util[i, 0] == 1.0
        expected = np.sort(sims[i])[::-1][:12]
        np.testing.assert_allclose(pool_a.neighbour_util[i], expected, atol=1e-5)
        np.testing.assert_allclose(sims[i, pool_a.neighbour_idx[i, 1:]], expected[1:], atol=1e-5)


def test_kit_survives_pickling(kit):
    """Workers receive the kit by pickle; the copy perturbs exactly like the original."""
    copy = pickle.loads(pickle.dumps(kit))
    text = "the river flows into the ocean near 42 oak trees"
    for mechanism in ("em", "aem"):
        original = TokenPerturber(kit, mechanism, 2.0).perturb(text, np.random.default_rng(5))
        assert TokenPerturber(copy, mechanism, 2.0).perturb(text, np.random.default_rng(5)) == original
