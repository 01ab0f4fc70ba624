#!/usr/bin/env bash
# Make WordNet 3.0 readable by nltk, offline, from Debian's packages.
#
#   scripts/install_wordnet.sh [DIR]     (default: $NLTK_DATA, else ~/.cache/dlth-orch/nltk_data)
#
# Installs the Debian packages wordnet-base + wordnet-sense-index when missing (needs root; CI runs
# as root), then copies their database files into DIR/corpora/wordnet/ (nltk refuses symlinks) and
# writes the `lexnames` file nltk needs but Debian does not ship (its 45 lines are documented in the
# lexnames(5WN) man page; they are written out below). Idempotent and quick: files already present
# and identical are left alone. Prints DIR on its last line; point NLTK_DATA at it.
set -euo pipefail

DIR="${1:-${NLTK_DATA:-$HOME/.cache/dlth-orch/nltk_data}}"
SRC=/usr/share/wordnet
DEST="$DIR/corpora/wordnet"
FILES="data.noun data.verb data.adj data.adv index.noun index.verb index.adj index.adv
noun.exc verb.exc adj.exc adv.exc index.sense cntlist.rev"

if [ ! -f "$SRC/data.noun" ] || [ ! -f "$SRC/index.sense" ]; then
    echo "install_wordnet: installing Debian packages wordnet-base wordnet-sense-index" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index >/dev/null 2>&1 || {
        apt-get update >/dev/null
        apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index >/dev/null
    }
fi

mkdir -p "$DEST"
for f in $FILES; do
    if [ ! -f "$DEST/$f" ] || [ -L "$DEST/$f" ] || ! cmp -s "$SRC/$f" "$DEST/$f"; then
        rm -f "$DEST/$f"
        cp "$SRC/$f" "$DEST/$f.tmp.$$"
        mv "$DEST/$f.tmp.$$" "$DEST/$f"
    fi
done

# lexnames(5WN): file number, lexicographer file name, syntactic category (1 noun 2 verb 3 adj 4 adv)
LEXNAMES="00 adj.all 3
01 adj.pert 3
02 adv.all 4
03 noun.Tops 1
04 noun.act 1
05 noun.animal 1
06 noun.artifact 1
07 noun.attribute 1
08 noun.body 1
09 noun.cognition 1
10 noun.communication 1
11 noun.event 1
12 noun.feeling 1
13 noun.food 1
14 noun.group 1
15 noun.location 1
16 noun.motive 1
17 noun.object 1
18 noun.person 1
19 noun.phenomenon 1
20 noun.plant 1
21 noun.possession 1
22 noun.process 1
23 noun.quantity 1
24 noun.relation 1
25 noun.shape 1
26 noun.state 1
27 noun.substance 1
28 noun.time 1
29 verb.body 2
30 verb.change 2
31 verb.cognition 2
32 verb.communication 2
33 verb.competition 2
34 verb.consumption 2
35 verb.contact 2
36 verb.creation 2
37 verb.emotion 2
38 verb.motion 2
39 verb.perception 2
40 verb.possession 2
41 verb.social 2
42 verb.stative 2
43 verb.weather 2
44 adj.ppl 3"
want="$(printf '%s\n' "$LEXNAMES" | tr ' ' '\t')"
if [ ! -f "$DEST/lexnames" ] || [ -L "$DEST/lexnames" ] || [ "$(cat "$DEST/lexnames")" != "$want" ]; then
    rm -f "$DEST/lexnames"
    printf '%s\n' "$want" > "$DEST/lexnames.tmp.$$"
    mv "$DEST/lexnames.tmp.$$" "$DEST/lexnames"
fi

echo "$DIR"
