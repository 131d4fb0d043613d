#!/usr/bin/env bash
# The docs site in a real browser: serves the built site on 127.0.0.1, opens pages in headless Chromium,
# checks that their content rendered (the DOM after the page's scripts ran), takes a screenshot of the home
# page, and checks every internal link of the site.
#
#   tests/docs-site/browser-test.sh SITE_DIR OUT_DIR
#
# Writes OUT_DIR/home.png and the dumped DOMs; prints PASS/FAIL per check and a last line
# "browser: N passed, N failed"; exits 1 when a check failed.
set -uo pipefail
site=$(realpath "$1")
out=$(mkdir -p "$2" && realpath "$2")
here=$(cd "$(dirname "$0")" && pwd)

passed=0
failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }

chromium_bin=$(command -v chromium || command -v chromium-browser || true)
if [[ -z $chromium_bin ]]; then
    fail "chromium: not installed"
    echo "browser: $passed passed, $failed failed"
    exit 1
fi

# The server, on a free port of 127.0.0.1.
port_file="$out/port"
rm -f "$port_file"
python3 "$here/serve.py" "$site" "$port_file" &
server=$!
profiles=()
cleanup() {
    kill "$server" 2>/dev/null
    wait "$server" 2>/dev/null
    for p in "${profiles[@]}"; do rm -rf "$p"; done
}
trap cleanup EXIT
for _ in $(seq 100); do
    [[ -s $port_file ]] && break
    sleep 0.1
done
if [[ ! -s $port_file ]]; then
    fail "serve $site on 127.0.0.1"
    echo "browser: $passed passed, $failed failed"
    exit 1
fi
base="http://127.0.0.1:$(cat "$port_file")"
echo "serving $site at $base"

# Headless Chromium as root, offline: no sandbox, no GPU, no background traffic, a new empty profile each time.
chromium_run() {
    local profile
    profile=$(mktemp -d)
    profiles+=("$profile")
    timeout 90 "$chromium_bin" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync --disable-dev-shm-usage \
        --user-data-dir="$profile" --virtual-time-budget=10000 "$@" 2>>"$out/chromium.log"
}

# check_page NAME PATH PHRASE...: the page's DOM after its scripts ran contains every phrase.
check_page() {
    local name=$1 path=$2
    shift 2
    local dom="$out/$name.dom.html" text="$out/$name.txt" missing=()
    if ! chromium_run --dump-dom "$base/$path" >"$dom" || [[ ! -s $dom ]]; then
        fail "$name ($path): Chromium dumped no DOM (see $out/chromium.log)"
        return
    fi
    python3 "$here/dom_text.py" "$dom" >"$text"
    for phrase in "$@"; do
        grep -qF -- "$phrase" "$text" || missing+=("$phrase")
    done
    if ((${#missing[@]})); then
        fail "$name ($path): missing $(printf '"%s" ' "${missing[@]}")"
    else
        pass "$name ($path): $(wc -l <"$text") lines of text, all ${#} phrases present"
    fi
}

# The home page: its own text, the included snippet, and the navigation bar that its scripts build from toc.json.
check_page home index.html \
    "Linux epoll for .NET servers" "dotnet add package EpollSharp" "new EventLoop()" \
    "Getting started" "Articles"
# The EventLoop API page: the type's summary, members and their XML docs.
check_page api-eventloop api/EpollSharp.EventLoop.html \
    "A single-threaded reactor" "Register(Socket, Interest, ReadinessCallback, object?, TriggerMode)" \
    "ScheduleRepeating" "Watches" "IsOnLoopThread"
# An article: its text, its table, and the article table of contents built by the scripts.
check_page article-concepts articles/concepts.html \
    "What one iteration does" "Compute the wait timeout." "Trigger modes" "OneShot" "Backends and portability"
# An article whose code comes from samples/Snippets.
check_page article-getting-started articles/getting-started.html \
    "An echo server on the loop" "OnAcceptable" "registration.Dispose();"
# The pipes, streams and TLS article: its text, a table, and code from samples/Snippets/PipesStreamsTls.cs.
check_page article-pipes-streams-tls articles/pipes-streams-tls.html \
    "Backpressure both ways" "InputPauseThreshold" "input.AdvanceTo(result.Buffer.End);" \
    "new TlsServerOptions(ssl)" "NegotiatedApplicationProtocol" "What is not done"

# A screenshot of the home page.
rm -f "$out/home.png"
chromium_run --hide-scrollbars --window-size=1280,1000 --screenshot="$out/home.png" "$base/index.html" >/dev/null
size=$(stat -c %s "$out/home.png" 2>/dev/null || echo 0)
if ((size > 20000)); then
    pass "screenshot of the home page: $out/home.png ($size bytes)"
else
    fail "screenshot of the home page: $size bytes (see $out/chromium.log)"
fi

# Every internal link, in the files (the served pages are the same files).
if python3 "$here/check_links.py" "$site" >"$out/links.log"; then
    pass "internal links: $(tail -1 "$out/links.log")"
else
    cat "$out/links.log"
    fail "internal links: $(tail -1 "$out/links.log")"
fi

echo "browser: $passed passed, $failed failed"
((failed == 0))
