"""The stop words P-Co leaves out by default: English function words, written for personadlg.

Pronouns, determiners, auxiliaries and modals, prepositions, conjunctions, common adverbs of
degree and time, and their contractions — the words any reply shares with any persona ("i",
"my", "a", "to", "and", "is"), which let a constant reply such as "i ." score P-Co 13.95 on
ConvAI2. `--p-co-stopwords none` keeps them (the papers' variant).
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

STOPWORD_LISTS: dict[str, frozenset[str]] = {"en": ENGLISH, "none": frozenset()}
