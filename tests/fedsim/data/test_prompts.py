"""The prompt format and reading the answer back out of generated text."""
import pytest

from fedsim.data.prompts import extract_answer, render_prompt, render_target
from fedsim.data.task import Example


def test_prompt_format():
    example = Example("Where is Mia?", "7", rationale="3 + 4 = 7", choices=("6", "7"))
    assert render_prompt(example, "answer") == "Question: Where is Mia?\nChoices: 6 | 7\nAnswer:"
    assert render_prompt(example, "rationale").endswith("\nRationale:")
    assert render_target(example, "answer") == " 7"
    assert render_target(example, "rationale") == " 3 + 4 = 7 #### 7"
    with pytest.raises(ValueError, match="no rationale"):
        render_target(Example("q", "1"), "rationale")
    with pytest.raises(ValueError, match="mode"):
        render_prompt(example, "explain")


@pytest.mark.parametrize("text, answer", [
    (" 3 + 4 = 7 . 7 - 2 = 5 #### 5", "5"),
    (" 3 + 4 = 7 #### 7\nQuestion: more", "7"),
    (" 8", "8"),
    (" the result is 12 then 4", "4"),
    (" -3.5", "-3.5"),
    (" #### ", ""),
    (" apple\nbanana", "apple"),
    ("", ""),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer
