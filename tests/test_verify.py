from protege.answers import grade
from protege.config import Recipe, VerifyConfig
from protege.records import (
    Question,
    Sample,
    TrainExample,
    Verdict,
    read_jsonl,
    write_jsonl,
)
from protege.rundir import RunDir
from protege.verify import example, grade_all, judge, run, select

THASH = Recipe().generate.teacher_hash()


def sample(qid, idx, reasoning, response, tokens=10, finish="stop", **kw) -> Sample:
    from protege.records import Usage

    return Sample(
        question_id=qid,
        sample_idx=idx,
        teacher="t",
        teacher_hash=THASH,
        prompt=[{"role": "user", "content": f"question {qid}"}],
        reasoning=reasoning,
        response=response,
        finish_reason=finish,
        usage=Usage(completion_tokens=tokens),
        **kw,
    )


def test_judge_reasons():
    cfg = VerifyConfig()
    assert judge(sample("a", 0, "2+3=5", "The answer is 5."), "5", cfg).correct
    assert judge(sample("a", 0, "2+3=6", "The answer is 6."), "5", cfg).reason.startswith("wrong")
    implicit = judge(sample("a", 0, "2+3=5 so she has 5 apples.", ""), "5", cfg)
    assert implicit.correct and implicit.reason == "equal via last_number"
    strict = VerifyConfig(implicit_answers=False)
    assert judge(sample("a", 0, "2+3=5 so 5", ""), "5", strict).reason == "no explicit final answer"
    cut = sample("a", 0, "2+3=5 so 5", "", finish="length")
    assert judge(cut, "5", cfg).reason == "cut off before an answer"
    loop = "She has 5 now.\n" * 4
    assert "repetition" in judge(sample("a", 0, loop, "The answer is 5."), "5", cfg).reason
    assert "teacher error" in judge(sample("a", 0, "", "", error="timeout"), "5", cfg).reason
    assert judge(sample("a", 0, "", "The answer is 5."), None, cfg).reason.startswith("cannot be")
    bounded = VerifyConfig(min_tokens=5, max_tokens=20)
    ok = "2+3=5"
    assert "too short" in judge(sample("a", 0, ok, "The answer is 5.", 3), "5", bounded).reason
    assert "too long" in judge(sample("a", 0, ok, "The answer is 5.", 30), "5", bounded).reason
    assert judge(sample("a", 0, ok, "The answer is 5.", 10), "5", bounded).correct
    stray = judge(sample("a", 0, "<think> 2+3=5", "The answer is 5."), "5", cfg)
    assert stray.reason == "unclosed or stray think delimiter"


def test_select_policies_and_duplicates():
    good = [
        sample("a", 0, "r1", "x", 30),
        sample("a", 1, "r1", "x", 5),
        sample("a", 2, "r2", "x", 9),
        sample("b", 0, "r3", "x", 7),
    ]
    kept, dropped = select(good, VerifyConfig(keep="all"))
    assert [(s.question_id, s.sample_idx) for s in kept] == [("a", 0), ("a", 2), ("b", 0)]
    assert [(s.question_id, s.sample_idx) for s in dropped] == [("a", 1)]  # duplicate trace
    kept, _ = select(good, VerifyConfig(keep="shortest"))
    assert [(s.question_id, s.sample_idx) for s in kept] == [("a", 2), ("b", 0)]
    kept, _ = select(good, VerifyConfig(keep="longest"))
    assert [(s.question_id, s.sample_idx) for s in kept] == [("a", 0), ("b", 0)]
    kept, _ = select(good, VerifyConfig(max_per_question=1))
    assert [(s.question_id, s.sample_idx) for s in kept] == [("a", 0), ("b", 0)]


def test_training_example_format():
    s = sample("a", 0, "2+3=5", "The answer is 5.\nThe answer is 7.")
    v = judge(s, "5", VerifyConfig())
    msgs = example(s, v, VerifyConfig()).messages
    assert msgs[-1] == {
        "role": "assistant",
        "content": "<think>\n2+3=5\n</think>\n\nThe answer is 5.",
    }
    plain = example(s, v, VerifyConfig(think_open="", think_close="")).messages[-1]["content"]
    assert plain == "2+3=5\n\nThe answer is 5."
    implicit = sample("a", 1, "2+3=5, so she has $5 left.", "")
    turn = example(implicit, judge(implicit, "5", VerifyConfig()), VerifyConfig()).messages[-1]
    assert turn["content"].endswith("</think>\n\nThe answer is 5.")


def test_stage_writes_funnel(tmp_path):
    recipe = Recipe(runs_dir=str(tmp_path))
    rd = RunDir(recipe.run_root)
    write_jsonl(
        rd.questions,
        [
            Question(id=i, problem=f"p{i}", answer=a, source="t")
            for i, a in [("a", "5"), ("b", "7")]
        ],
    )
    samples = [
        sample("a", 0, "ok", "The answer is 5."),
        sample("a", 1, "bad", "The answer is 4."),
        sample("b", 0, "ok", "The answer is 7."),
        sample("c", 0, "x", "The answer is 1."),
    ]
    write_jsonl(rd.samples, samples)
    m = run(recipe, rd)
    assert m["counts"]["samples"] == 3  # "c" is not a selected question
    assert (m["counts"]["kept"], m["counts"]["rejected"]) == (2, 1)
    assert m["counts"]["rejected_by_reason"] == {"wrong answer": 1}
    assert [v.sample_idx for v in read_jsonl(rd.rejected, Verdict)] == [1]
    assert len(read_jsonl(rd.train_set, TrainExample)) == 2
    from datasets import load_from_disk

    hf = load_from_disk(str(rd.stage("verify") / "hf"))
    assert hf.num_rows == 2 and hf[0]["messages"][-1]["role"] == "assistant"
    card = (rd.stage("verify") / "README.md").read_text()
    assert "| 2 | 3 | 2 | 2 | 2 |" in card  # questions, samples, correct, kept, with kept
    assert "| t | - | 3 | 2 | 66.7% | 2 |" in card and "terms of service" in card
    assert run(recipe, rd) is None


def test_grade_all_in_workers_matches_in_process():
    cfg = VerifyConfig(kind="math", workers=2)
    samples = [
        sample("a", 0, "r", "So \\boxed{\\frac{1}{2}}."),
        sample("a", 1, "r", "\\boxed{0.5}"),
        sample("a", 2, "r", "\\boxed{2}"),
        sample("a", 3, "r", "", finish="length"),
    ]
    gold = {"a": "\\frac{2}{4}"}
    grades = grade_all(samples, gold, cfg)
    assert [g.correct if g else None for g in grades] == [True, True, False, None]
    assert grades[:3] == [grade(s.response, "\\frac{2}{4}", kind="math") for s in samples[:3]]


def test_code_samples_run_against_their_tests(tmp_path):
    from protege.sandbox import isolation_prefix

    try:
        isolation_prefix()
    except RuntimeError as e:
        import pytest

        pytest.skip(str(e))
    recipe = Recipe(runs_dir=str(tmp_path), verify={"kind": "code", "timeout_s": 3})
    rd = RunDir(recipe.run_root)
    tests = "assert add(2, 3) == 5"
    write_jsonl(
        rd.questions,
        [
            Question(
                id="c", problem="Write add(a, b).", source="t", domain="code", meta={"tests": tests}
            )
        ],
    )
    good = "Add them.\n```python\ndef add(a, b):\n    return a + b\n```"
    bad = "```python\ndef add(a, b):\n    return a * b\n```"
    hang = "```python\ndef add(a, b):\n    while True: pass\n```\nadd(1, 2)"
    write_jsonl(
        rd.samples,
        [
            sample("c", 0, good, ""),
            sample("c", 1, bad, ""),
            sample("c", 2, hang + "\n```python\nwhile True: pass\n```", ""),
            sample("c", 3, "no code here", ""),
        ],
    )
    m = run(recipe, rd)
    assert (m["counts"]["kept"], m["counts"]["rejected"]) == (1, 3)
    reasons = {v.sample_idx: v.reason for v in read_jsonl(rd.rejected, Verdict)}
    assert "AssertionError" in reasons[1] and "timeout" in reasons[2]
    assert reasons[3].startswith("wrong program: no code block")
    ex = read_jsonl(rd.train_set, TrainExample)[0]
    assert "return a + b" in ex.messages[-1]["content"]


def test_llm_judge_decides_what_no_gold_answer_can(tmp_path):
    def verdict(text):
        if "mumble" in text:
            return "Hmm, unsure."
        ok = "Paris" in text.split("Proposed solution:")[1]
        return f"Hmm.\nVERDICT: {'CORRECT' if ok else 'INCORRECT'}"

    httpd, url = fake_chat_server(verdict)
    recipe = Recipe(
        runs_dir=str(tmp_path),
        verify={"judge": {"provider": "openai", "teacher": "judge-1", "base_url": url}},
    )
    rd = RunDir(recipe.run_root)
    write_jsonl(rd.questions, [Question(id="f", problem="Capital of France?", source="t")])
    write_jsonl(
        rd.samples,
        [
            sample("f", 0, "It is Paris.", ""),
            sample("f", 1, "Lyon.", ""),
            sample("f", 2, "mumble", ""),
        ],
    )
    m = run(recipe, rd)
    httpd.shutdown()
    assert m["counts"]["kept"] == 1
    kept = read_jsonl(rd.kept, Verdict)[0]
    assert (kept.sample_idx, kept.reason) == (0, "judged correct by judge-1")
    reasons = {v.sample_idx: v.reason for v in read_jsonl(rd.rejected, Verdict)}
    assert reasons == {
        1: "judged incorrect by judge-1",
        2: "cannot be checked: judge gave no verdict",
    }
    assert read_jsonl(rd.train_set, TrainExample)[0].messages[-1]["content"] == "It is Paris."


def fake_chat_server(reply):
    """An OpenAI-compatible loopback server whose answer is reply(user message)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from conftest import send_json

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            message = {"role": "assistant", "content": reply(req["messages"][-1]["content"])}
            body = json.dumps(
                {
                    "id": "r",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "m",
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                    "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                }
            ).encode()
            send_json(self, 200, body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def test_reformatting_keeps_only_rewrites_that_still_verify(tmp_path):
    def rewrite(text):
        answer = "5" if "question a" in text or "add 2 and 3" in text else "99"
        return f"<think>\nStep 1: clean.\n</think>\n\nThe answer is {answer}."

    httpd, url = fake_chat_server(rewrite)
    recipe = Recipe(
        runs_dir=str(tmp_path),
        verify={"reformat": {"provider": "openai", "teacher": "rewriter", "base_url": url}},
    )
    rd = RunDir(recipe.run_root)
    write_jsonl(
        rd.questions,
        [
            Question(id="a", problem="add 2 and 3", answer="5", source="t"),
            Question(id="b", problem="add 3 and 4", answer="7", source="t"),
        ],
    )
    write_jsonl(
        rd.samples,
        [
            sample("a", 0, "2+3 is 5", "The answer is 5."),
            sample("b", 0, "3+4 is 7", "The answer is 7."),
        ],
    )
    m = run(recipe, rd)
    httpd.shutdown()
    assert (m["counts"]["kept"], m["counts"]["reformatted"]) == (2, 1)
    turns = {
        e.question_id: e.messages[-1]["content"] for e in read_jsonl(rd.train_set, TrainExample)
    }
    assert turns["a"] == "<think>\nStep 1: clean.\n</think>\n\nThe answer is 5."
    assert turns["b"] == "<think>\n3+4 is 7\n</think>\n\nThe answer is 7."  # rewrite was wrong
    assert (
        "rewritten into the template by `rewriter`"
        in (rd.stage("verify") / "README.md").read_text()
    )
