"""Stop words by language, written for personadlg: one list per language, shared by every user.

- `ENGLISH` is what P-Co leaves out by default (`metrics/persona.py`): pronouns, determiners,
  auxiliaries and modals, prepositions, conjunctions, common adverbs of degree and time, and their
  contractions — the words any reply shares with any persona ("i", "my", "a", "to", "and", "is"),
  which let a constant reply such as "i ." score P-Co 13.95 on ConvAI2.
- `STOPWORDS` is the stop-word profile of each language the clean `language` filter tells apart
  (`data/clean/filters.py`): the share of a text's words in each list says which language it is.
  English is `ENGLISH`; the others are their most frequent function words.
"""

from __future__ import annotations

ENGLISH = frozenset(
    """
    i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his
    himself she her hers herself it its itself they them their theirs themselves
    this that these those there here who whom whose which what when where why how
    a an the some any no not nor none all both each every either neither other another such
    same few more most much many
    am is are was were be been being have has had having do does did doing done
    will would shall should can could may might must ought
    to of in on at by for with about against between into through during before after above
    below from up down out off over under again further then once than too very so just also
    only even still yet ever never always often sometimes now soon already really quite
    and but or if because as until while though although unless since whether
    yes yeah oh ok okay hi hello hey
    i'm i've i'd i'll you're you've you'd you'll he's she's it's we're we've we'd we'll
    they're they've they'd they'll that's there's here's what's who's how's let's
    isn't aren't wasn't weren't don't doesn't didn't haven't hasn't hadn't won't wouldn't
    can't cannot couldn't shouldn't mustn't im ive dont cant
    """.split()
)

STOPWORDS: dict[str, frozenset[str]] = {
    "en": ENGLISH,
    "de": frozenset(
        """
        der die das und oder aber ich du er sie wir ihr nicht ist sind war ein eine zu mit auf
        für von den dem des auch sich es wie was mein dein
        """.split()
    ),
    "fr": frozenset(
        """
        le la les et ou mais je tu il elle nous vous ils pas est sont était un une de du des à en
        pour avec sur ce que qui mon ton
        """.split()
    ),
    "es": frozenset(
        """
        el la los las y o pero yo tú él ella nosotros no es son era un una de del en para con por
        que qué mi tu muy también
        """.split()
    ),
    "it": frozenset(
        """
        il lo la gli le e o ma io tu lui lei noi non è sono era un una di del della in per con che
        mio tuo molto anche
        """.split()
    ),
    "pt": frozenset(
        """
        o a os as e ou mas eu tu ele ela nós não é são era um uma de do da em para com por que meu
        teu muito também
        """.split()
    ),
    "nl": frozenset(
        """
        de het een en of maar ik jij hij zij wij niet is zijn was van in op voor met dat die wat
        mijn jouw ook
        """.split()
    ),
}
"""Language code → its stop words (the languages `clean --lang` accepts, in this order)."""
