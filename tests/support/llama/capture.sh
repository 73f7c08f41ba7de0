#!/usr/bin/env bash
# Captures the llamacpp_real_* fixtures: real responses of llama.cpp's server (as shipped
# in the PyPI package xllamacpp) serving the tiny model of tiny_model.py, byte for byte
# as curl received them. Re-run after an upgrade of xllamacpp, then re-run the tests.
#
#   PYTHON=/path/to/python-with-xllamacpp-and-gguf bash tests/support/llama/capture.sh
#
# The request bodies are the ones Toka's OpenAiClient sends (model, messages, tools,
# max_tokens; stream + stream_options.include_usage when streaming).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../fixtures/models"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

"$python" "$here/tiny_model.py" "$work/tiny.gguf"
mkfifo "$work/stdin"
"$python" "$here/serve.py" "$work/tiny.gguf" toka-tiny <"$work/stdin" >"$work/out" 2>"$work/log" &
server_pid=$!
exec 3>"$work/stdin" # holds the server's stdin open until this script ends
for _ in $(seq 100); do
    grep -q '^listening ' "$work/out" 2>/dev/null && break
    sleep 0.1
done
base="$(awk '/^listening /{print $2}' "$work/out")"
[ -n "$base" ] || { cat "$work/log" >&2; echo "the server did not start" >&2; exit 1; }

tools='[{"type":"function","function":{"name":"get_weather","description":"The weather in a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]'
ask='[{"role":"system","content":"Be brief."},{"role":"user","content":"Capital of France?"}]'
weather='[{"role":"user","content":"Weather in Paris?"}]'
long="$("$python" -c 'import json; print(json.dumps([{"role":"user","content":"word " * 1500}]))')"

post() { # FILE BODY: the response body of POST /v1/chat/completions, verbatim
    curl -sS -N -o "$out/$1" -H 'content-type: application/json' \
        --data-binary "$2" "$base/v1/chat/completions"
}
stream='"stream":true,"stream_options":{"include_usage":true}'
post llamacpp_real_text.json "{\"model\":\"toka-tiny\",\"messages\":$ask}"
post llamacpp_real_stream.sse "{\"model\":\"toka-tiny\",\"messages\":$ask,$stream}"
post llamacpp_real_length.json "{\"model\":\"toka-tiny\",\"messages\":$ask,\"max_tokens\":2}"
post llamacpp_real_tool_calls.json "{\"model\":\"toka-tiny\",\"messages\":$weather,\"tools\":$tools}"
post llamacpp_real_stream_tool_calls.sse "{\"model\":\"toka-tiny\",\"messages\":$weather,\"tools\":$tools,$stream}"
post llamacpp_real_error_context.json "{\"model\":\"toka-tiny\",\"messages\":$long}"
ls -l "$out"/llamacpp_real_*
