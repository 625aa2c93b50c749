"""Prompt encoding and context checks of the LLM deployment, with the real tokenizer."""

import pytest
from transformers import AutoTokenizer

from deployments.prompt import PromptEncoder, TextTokenCounter, check_fits
from deployments.sampling import sampling_params
from schemas.errors import ContextLengthExceeded, InvalidRequest
from schemas.generation import GenerationRequest, SamplingOptions
from tests.paths import MODELS

MODEL = MODELS / "SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def encoder() -> PromptEncoder:
    return PromptEncoder(AutoTokenizer.from_pretrained(MODEL))


def test_chat_prompt_uses_the_models_chat_template(encoder: PromptEncoder) -> None:
    tok = AutoTokenizer.from_pretrained(MODEL)
    ids = encoder.encode(
        GenerationRequest(
            "r", SamplingOptions(), messages=[{"role": "user", "content": "What is 2+2?"}]
        )
    )
    text = str(tok.decode(ids))
    assert "What is 2+2?" in text
    assert text.rstrip().endswith("assistant")  # generation prompt appended
    assert len(ids) > len(tok.encode("What is 2+2?"))


def test_text_and_token_prompts(encoder: PromptEncoder) -> None:
    ids = encoder.encode(GenerationRequest("r", SamplingOptions(), prompt="Hello there"))
    assert (
        ids
        and encoder.encode(GenerationRequest("r", SamplingOptions(), prompt_token_ids=ids)) == ids
    )
    with pytest.raises(InvalidRequest, match="token ids"):
        encoder.encode(GenerationRequest("r", SamplingOptions(), prompt_token_ids=[10**9]))


def test_generation_request_needs_exactly_one_prompt_form() -> None:
    with pytest.raises(ValueError):
        GenerationRequest("r", SamplingOptions(), prompt="a", prompt_token_ids=[1])
    with pytest.raises(ValueError):
        GenerationRequest("r", SamplingOptions())


def test_check_fits() -> None:
    assert check_fits(100, None, 2048) == 1948  # unset: all the room left
    assert check_fits(100, 1948, 2048) == 1948
    with pytest.raises(ContextLengthExceeded, match="2049 tokens"):
        check_fits(100, 1949, 2048)
    with pytest.raises(ContextLengthExceeded) as err:
        check_fits(2048, None, 2048)
    assert err.value.code == "context_length_exceeded" and err.value.status == 400


def test_sampling_params_default_to_openai_and_stream_deltas() -> None:
    from vllm.sampling_params import RequestOutputKind

    params = sampling_params(SamplingOptions(stop=["x"], seed=5, ignore_eos=True), 12)
    assert (params.temperature, params.top_p, params.max_tokens) == (1.0, 1.0, 12)
    assert params.stop == ["x"] and params.seed == 5 and params.ignore_eos
    assert params.output_kind == RequestOutputKind.DELTA
    nucleus = sampling_params(SamplingOptions(temperature=0.7, top_p=0.5, top_k=20), 1)
    assert (nucleus.temperature, nucleus.top_p, nucleus.top_k) == (0.7, 0.5, 20)


@pytest.mark.parametrize(
    "request_",
    [
        GenerationRequest(
            "r", SamplingOptions(), messages=[{"role": "user", "content": "bad \ud800 text"}]
        ),
        GenerationRequest("r", SamplingOptions(), prompt="bad \udfff text"),
    ],
)
def test_text_the_tokenizer_cannot_encode_is_a_400(
    encoder: PromptEncoder, request_: GenerationRequest
) -> None:
    with pytest.raises(InvalidRequest, match="could not be tokenized") as err:
        encoder.encode(request_)
    assert err.value.param in ("messages", "prompt")


def test_decode_and_token_strings_check_the_vocabulary(encoder: PromptEncoder) -> None:
    ids = encoder.encode(GenerationRequest("r", SamplingOptions(), prompt="Hello there"))
    assert encoder.decode(ids) == "Hello there"
    assert encoder.token_strings(ids) == ["Hello", "Ġthere"]
    for bad in ([49152], [-1]):
        with pytest.raises(InvalidRequest) as raised:
            encoder.decode(bad)
        assert raised.value.param == "tokens"


def test_documents_are_cut_at_a_token_boundary() -> None:
    counter = TextTokenCounter(AutoTokenizer.from_pretrained(MODELS / "all-MiniLM-L6-v2"))
    texts = ["The quick brown foxes jumped", "short"]
    cut = counter.truncate(texts, 3)
    assert cut == ["The quick brown", "short"]
    assert counter.counts(cut) == [3 + 2, 1 + 2]  # [CLS] and [SEP] on top
