"""The reranker's scorers on real models, without Ray: a small cross-encoder the test
builds (random weights: plumbing only) and the packaged MiniLM as a bi-encoder."""

from __future__ import annotations

import numpy as np
import pytest

from deployments.reranker import BiEncoderScorer, CrossEncoderScorer, PairScorer
from tests.integration.conftest import ROOT

MINILM = str(ROOT / "models" / "all-MiniLM-L6-v2")
QUERY = "How do I reset my password?"
DOCS = [
    "Bananas are yellow.",
    "To reset your password, click 'Forgot password' on the sign-in page.",
    "Our office is in Paris and opens at nine. " * 3,
    "Passwords must have twelve characters.",
    "word " * 2000,  # far over any model's limit: truncated, never a crash
]


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> CrossEncoderScorer:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(MINILM)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512,
    )  # fmt: skip
    config.num_labels = 1  # one relevance logit, as rerankers have
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return CrossEncoderScorer(str(folder), "cpu", batch_size=3, max_batch_tokens=256)


@pytest.fixture(scope="module")
def bi_encoder() -> BiEncoderScorer:
    return BiEncoderScorer(MINILM, "cpu", batch_size=3, max_batch_tokens=256)


def check_batching_does_not_mix_answers(scorer: PairScorer) -> None:
    pairs = [(QUERY, d) for d in DOCS] + [("Where is the office?", d) for d in DOCS]
    together = scorer.score(pairs)
    alone = [scorer.score([pair]) for pair in pairs]
    np.testing.assert_allclose(together.scores, [a.scores[0] for a in alone], atol=1e-4)
    assert together.token_counts == [a.token_counts[0] for a in alone]
    assert max(together.token_counts) <= scorer.max_input_tokens * 2


def test_cross_encoder_batches_without_mixing_answers(cross_encoder: CrossEncoderScorer) -> None:
    check_batching_does_not_mix_answers(cross_encoder)
    result = cross_encoder.score([(QUERY, DOCS[-1])])
    assert result.token_counts == [cross_encoder.max_input_tokens]  # truncated to the limit
    assert 0.0 <= float(result.scores[0]) <= 1.0  # sigmoid of the single logit


def test_bi_encoder_ranks_the_answer_first(bi_encoder: BiEncoderScorer) -> None:
    check_batching_does_not_mix_answers(bi_encoder)
    scores = bi_encoder.score([(QUERY, d) for d in DOCS]).scores
    assert int(np.argmax(scores)) == 1
    assert bi_encoder.max_input_tokens == 256
