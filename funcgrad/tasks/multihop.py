"""Two-hop question answering over a generated knowledge base of fictional facts.

A seeded world has people (who work for a company and were born in a city),
companies (headquartered in a city, founded by a founder) and founders (born in a
city). Questions need two facts, e.g. "In which city does the employer of Alice
Brandt have its headquarters?" (person → employer → headquarters city).

Pipeline (the cyclic case: one LLM node called twice)::

    query#0(question, facts="(none yet)") → retrieve#0 → query#1(question, facts=hop-1 facts)
        → retrieve#1 → answer(question, facts1, facts2)

``retrieve`` is a keyword-overlap retriever (IDF-weighted, crude prefix stemming)
returning the top-k fact strings. The loss is normalized exact match on the answer.

>>> world = build_world(0)
>>> q = world.questions[0]
>>> all(f in world.facts for f in q.support)
True
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter

import attrs

from funcgrad.core.errors import ConfigError
from funcgrad.core.nodes import LLM, Fn, Var, retriever
from funcgrad.core.state import Param, PromptState
from funcgrad.core.task import Task
from funcgrad.tasks.demos import with_demos
from funcgrad.tasks.parsing import make_splits, text_match_loss

FIRST = (
    "Alice", "Bruno", "Clara", "Dmitri", "Elena", "Farid", "Greta", "Hamid", "Ingrid", "Jasper", "Keiko", "Lionel",
    "Mirela", "Nikolai", "Odile", "Pavel", "Quinn", "Rosa", "Silas", "Talia", "Ulric", "Vera", "Wendell", "Yara",
)
LAST = (
    "Brandt", "Castell", "Dovner", "Esterly", "Falkner", "Grisholm", "Halvorsen", "Ibbetson", "Jurek", "Kovalen",
    "Lindqvist", "Marchetti", "Norbury", "Okonkwo", "Pelletier", "Quarles", "Rademacher", "Stavros", "Trelawny",
    "Underhill", "Vasquez", "Whitlock",
)
CITIES = (
    "Norvale", "Port Ellin", "Carrowby", "Eastmere", "Hollin Bay", "Quenford", "Ravensholt", "Tarnwick",
    "Velloria", "Ashgrove", "Brindlemoor", "Calder Rise", "Dunmarsh", "Feywick", "Glenhallow", "Kestwater",
)
COMPANY_PREFIX = (
    "Veltrix", "Orbanta", "Quillon", "Zephra", "Marrowind", "Kestrel", "Lumora", "Brightwell", "Corvane",
    "Pellucid", "Stratum", "Tesselate", "Arborix", "Halcyra",
)
COMPANY_SUFFIX = ("Systems", "Foods", "Logistics", "Labs", "Textiles", "Media", "Robotics", "Energy")


@attrs.frozen
class Question:
    """A generated question: text, answer, kind, and the two supporting facts in hop order."""

    text: str
    answer: str
    kind: str
    support: tuple[str, str]


@attrs.frozen
class World:
    """A seeded knowledge base: all fact strings and every answerable two-hop question."""

    facts: tuple[str, ...]
    questions: tuple[Question, ...]


def build_world(seed: int, *, n_people: int = 64, n_companies: int = 12, n_cities: int = 12) -> World:
    """The knowledge base of ``seed``: fact sentences (in a seeded order) and the questions they answer."""
    rng = random.Random(f"funcgrad.tasks.multihop.world:{seed}")
    names = [f"{f} {l}" for f in FIRST for l in LAST]
    rng.shuffle(names)
    people, founders = names[:n_people], names[n_people:n_people + n_companies]
    cities = rng.sample(CITIES, n_cities)
    prefixes = rng.sample(COMPANY_PREFIX, n_companies)
    companies = [f"{p} {rng.choice(COMPANY_SUFFIX)}" for p in prefixes]
    facts: list[str] = []
    questions: list[Question] = []
    hq, founder_of, born = {}, {}, {}
    for company, founder in zip(companies, founders, strict=True):
        hq[company] = rng.choice(cities)
        founder_of[company] = founder
        born[founder] = rng.choice(cities)
        facts += [
            f"{company} is headquartered in {hq[company]}.",
            f"{company} was founded by {founder}.",
            f"{founder} was born in {born[founder]}.",
        ]
    for person in people:
        employer = rng.choice(companies)
        birth = rng.choice(cities)
        works = f"{person} works for {employer}."
        facts += [works, f"{person} was born in {birth}."]
        questions.append(Question(
            f"In which city does the employer of {person} have its headquarters?", hq[employer], "employer_hq",
            (works, f"{employer} is headquartered in {hq[employer]}."),
        ))
        questions.append(Question(
            f"Who founded the company that {person} works for?", founder_of[employer], "employer_founder",
            (works, f"{employer} was founded by {founder_of[employer]}."),
        ))
    for company in companies:
        founder = founder_of[company]
        questions.append(Question(
            f"In which city was the founder of {company} born?", born[founder], "founder_birthplace",
            (f"{company} was founded by {founder}.", f"{founder} was born in {born[founder]}."),
        ))
    rng.shuffle(facts)
    return World(tuple(facts), tuple(questions))


STOPWORDS = frozenset(
    "a an the of in on at to for by is was were be who whom which what where when does do did its it his her their "
    "and or that this with from have has had company city person search query find fact facts none yet".split()
)


def tokens(text: str) -> list[str]:
    """Lower-case word stems (first 6 letters) without stopwords.

    >>> tokens("Where is Veltrix Systems headquartered?")
    ['veltri', 'system', 'headqu']
    """
    return [w[:6] for w in re.findall(r"[a-z0-9]+", str(text).lower()) if w not in STOPWORDS]


class KeywordIndex:
    """IDF-weighted keyword overlap over fact strings; ties keep the facts' order."""

    def __init__(self, facts: tuple[str, ...]):
        self.facts = facts
        self.fact_tokens = [frozenset(tokens(f)) for f in facts]
        df = Counter(t for toks in self.fact_tokens for t in toks)
        self.idf = {t: math.log(1 + len(facts) / n) for t, n in df.items()}

    def search(self, query: str, k: int) -> tuple[str, ...]:
        q = set(tokens(query))
        scored = [(sum(self.idf[t] for t in q & toks), -i) for i, toks in enumerate(self.fact_tokens)]
        best = sorted((s for s in scored if s[0] > 0), reverse=True)[:k]
        return tuple(self.facts[-i] for _, i in best)


def make_retriever(facts: tuple[str, ...], name: str = "retrieve") -> Fn:
    """A traced retriever node over ``facts``: ``retrieve(query, k=3) -> tuple of fact strings``."""
    index = KeywordIndex(facts)

    @retriever(name)
    def retrieve(query, k=3):
        found = index.search(str(query or ""), k)
        return found if found else ("(no matching facts found)",)

    return retrieve


query_node = LLM(
    "query",
    system=("query_system",),
    user="Question: {question}\n\nFacts found so far:\n{facts}\n\nSearch query:",
    max_tokens=40,
    stop=("\n\n",),
)
answer_node = LLM(
    "answer",
    system=("answer_system",),
    user="Question: {question}\n\nFacts:\n{facts1}\n{facts2}",
    max_tokens=64,
)
NO_FACTS = "(none yet)"


def make_pipeline(retrieve: Fn, hops: int = 2):
    """The multi-hop pipeline over one retriever: ``hops`` query/retrieve rounds, then answer."""

    def pipeline(prompts: PromptState, x: Var) -> Var:
        found: list[Var] = []
        facts: Var | str = NO_FACTS
        for _ in range(hops):
            query = query_node(prompts, question=x, facts=facts)
            facts = retrieve(query, k=3)
            found.append(facts)
        return answer_node(prompts, question=x, facts1=found[0], facts2=found[-1])

    return pipeline


def initial_state() -> PromptState:
    """Plain starting prompts for the query and answer nodes (answer format is a separate peer)."""
    return with_demos(PromptState(
        params={
            "query_instruction": Param(
                "Write a search query.",
                role=(
                    "system instruction of the 'query' LLM node, called twice per question (hop 1 with no facts, "
                    "hop 2 with the facts hop 1 found); its whole reply is the query of a keyword-overlap retriever "
                    "over one-sentence facts like '<person> works for <company>.', '<company> is headquartered in "
                    "<city>.', '<company> was founded by <person>.', '<person> was born in <city>.'; the reply is cut "
                    "at 40 tokens"
                ),
                kind="instruction",
            ),
            "answer_instruction": Param(
                "Answer the question using the facts.",
                role=(
                    "system instruction of the 'answer' LLM node, which gets the question and the facts retrieved "
                    "in both hops and must chain two facts (e.g. person -> employer -> headquarters city)"
                ),
                kind="instruction",
            ),
            "answer_format": Param(
                "Reply with the answer only.",
                role=(
                    "output-format rule of the 'answer' node; the metric takes the text after the last 'Answer:' "
                    "if present, else the first non-empty line, and compares it to the expected name (case, "
                    "punctuation and articles ignored), so the answer must be just the city or person name"
                ),
                kind="format",
            ),
        },
        groups={"query_system": ("query_instruction",), "answer_system": ("answer_instruction", "answer_format")},
    ), {"query_system": "query", "answer_system": "answer"})


def multihop(*, seed: int = 0, n_train: int = 30, n_val: int = 20, n_test: int = 50) -> Task:
    """The two-hop QA task over the knowledge base of ``seed``; normalized exact-match loss."""
    world = build_world(seed)
    total = n_train + n_val + n_test if all(isinstance(n, int) for n in (n_train, n_val, n_test)) else 0
    if total > len(world.questions):
        raise ConfigError(f"multihop: asked for {total} examples but the world has only {len(world.questions)} questions")
    order = list(world.questions)
    random.Random(f"funcgrad.tasks.multihop.order:{seed}").shuffle(order)
    pool = iter(order)

    def generate(rng):
        q = next(pool)
        return q.text, q.answer

    train, val, test = make_splits("multihop", seed, generate, n_train, n_val, n_test)
    return Task(
        name="multihop",
        pipeline=make_pipeline(make_retriever(world.facts)),
        state=initial_state(),
        loss=text_match_loss,
        train=train,
        val=val,
        test=test,
        description=(
            f"Two-hop questions over a fictional knowledge base of {len(world.facts)} one-sentence facts "
            "(people, employers, headquarters, founders, birthplaces); a query node is called once per hop, a "
            "keyword retriever returns the top 3 facts, an answer node names a city or person."
        ),
    )
