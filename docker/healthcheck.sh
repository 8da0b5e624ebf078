#!/usr/bin/env bash
# Container health probe for the serving image. The tensorflow/serving image ships no curl or
# wget, so this speaks HTTP over bash's own /dev/tcp: GET /v1/models/<name> on the REST port for
# every served model, and passes only when each one answers 200 with a version AVAILABLE.
# A server that is up but still loading (or failed to load) a model is therefore unhealthy.
#
# TLS: TensorFlow Serving's --ssl_config_file secures the gRPC port only; its REST port always
# speaks plain HTTP. So with TLS turned on, the probe of the real container keeps working
# unchanged. Only a REST port that speaks HTTPS (the embedded `python -m serving` can do that)
# needs HEALTHCHECK_CA (PEM roots to trust) and, for mutual TLS, HEALTHCHECK_CERT and
# HEALTHCHECK_KEY; any of them makes the probe use HTTPS through curl or, failing that,
# `openssl s_client`. bash alone cannot speak TLS, so without either tool the probe says so.
#
# The models probed are the ones the server's models.config names (HEALTH_CONFIG, by default the
# image's /config/models.config), so a new model is probed once it is served.
# Overrides (for tests, or another port): HEALTH_HOST, HEALTH_PORT, HEALTH_CONFIG, HEALTH_MODELS
# (space-separated; replaces the names read from the config).
set -euo pipefail

host="${HEALTH_HOST:-127.0.0.1}"
port="${HEALTH_PORT:-8501}"
config="${HEALTH_CONFIG:-/config/models.config}"
# The `name: "<model>"` fields of the text-format ModelServerConfig, read with bash alone (the
# tensorflow/serving image has no Python): any number per line, lines that start with `#` skipped.
# Only ModelConfig has a field called `name` (the version labels use `key`), so every match is a
# model. Escapes inside the quoted name are not decoded; keep model names to plain characters.
config_models() {
  local line rest
  while IFS= read -r line || [[ -n "$line" ]]; do
    [[ "$line" =~ ^[[:space:]]*# ]] && continue
    rest="$line"
    while [[ "$rest" =~ (^|[[:space:]{])name:[[:space:]]*\"([^\"]*)\"(.*)$ ]]; do
      models+=("${BASH_REMATCH[2]}")
      rest="${BASH_REMATCH[3]}"
    done
  done <"$config"
}
models=()
if [[ -n "${HEALTH_MODELS:-}" ]]; then
  read -r -a models <<<"$HEALTH_MODELS"
elif [[ -r "$config" ]]; then
  config_models
  if ((${#models[@]} == 0)); then
    echo "unhealthy: ${config} names no model (no \`name: \"...\"\` field)" >&2
    exit 1
  fi
else
  echo "unhealthy: no models to probe: cannot read ${config} (set HEALTH_CONFIG or HEALTH_MODELS)" >&2
  exit 1
fi
# A model name as one URL path segment: every byte but RFC 3986's unreserved ones %-encoded, so
# a name with a space, `/`, `:` or a non-ASCII letter still makes a valid request line and reaches
# the model (both servers %-decode the name in /v1/models/<name>).
urlencode() {
  local LC_ALL=C text="$1" out="" char i
  for ((i = 0; i < ${#text}; i++)); do
    char="${text:i:1}"
    case "$char" in
      [A-Za-z0-9._~-]) out+="$char" ;;
      *) printf -v char '%%%02X' "'$char" && out+="$char" ;;
    esac
  done
  printf '%s' "$out"
}
# Per-read limit in seconds; Docker's HEALTHCHECK --timeout bounds the whole probe anyway.
read_timeout="${HEALTH_READ_TIMEOUT:-3}"
ca="${HEALTHCHECK_CA:-}"
cert="${HEALTHCHECK_CERT:-}"
key="${HEALTHCHECK_KEY:-}"

# Fills the caller's `response` (bash locals are dynamically scoped) with the raw HTTP answer:
# status line, headers and body, over plain HTTP.
fetch_http() {
  local path="$1" line=""
  # A refused connection makes the redirection fail; report it instead of bash's bare error.
  if ! exec 3<>"/dev/tcp/${host}/${port}"; then
    echo "unhealthy: cannot connect to ${host}:${port}" >&2
    return 1
  fi
  # HTTP/1.1 with Connection: close so the server ends the response by closing the socket,
  # which is what the read loop below waits for.
  printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$host" >&3
  while IFS= read -r -t "$read_timeout" line <&3; do
    response+="${line}"$'\n'
  done
  # The last line may lack a newline (read then fails but has still filled `line`).
  response+="${line}"
  exec 3<&- 3>&-
}

# The same over HTTPS, verifying the server against HEALTHCHECK_CA (or the system's roots).
fetch_https() {
  local model="$1" path="$2" args=()
  if [[ -n "$cert" && -z "$key" || -z "$cert" && -n "$key" ]]; then
    echo "unhealthy: HEALTHCHECK_CERT and HEALTHCHECK_KEY go together; set both or neither" >&2
    return 1
  fi
  if command -v curl >/dev/null; then
    args=(--silent --show-error --include --http1.1 --max-time "$read_timeout")
    [[ -z "$ca" ]] || args+=(--cacert "$ca")
    [[ -z "$cert" ]] || args+=(--cert "$cert" --key "$key")
    if ! response="$(curl "${args[@]}" "https://${host}:${port}${path}" 2>&1)"; then
      # curl's first line is the reason; the rest is advice about its web page.
      echo "unhealthy: ${model}: ${response%%$'\n'*}" >&2
      return 1
    fi
  elif command -v openssl >/dev/null; then
    # -verify_return_error makes a certificate the CA does not vouch for fail the handshake.
    args=(s_client -quiet -verify_return_error -connect "${host}:${port}")
    if [[ "$host" =~ ^[0-9.]+$|: ]]; then args+=(-verify_ip "$host"); else
      args+=(-servername "$host" -verify_hostname "$host"); fi
    [[ -z "$ca" ]] || args+=(-CAfile "$ca")
    [[ -z "$cert" ]] || args+=(-cert "$cert" -key "$key")
    response="$(printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' \
      "$path" "$host" | timeout "$read_timeout" openssl "${args[@]}" 2>/dev/null)" || true
    if [[ -z "$response" ]]; then
      echo "unhealthy: ${model}: no HTTPS answer from ${host}:${port} (TLS handshake" \
        "failed? \`openssl s_client -connect ${host}:${port}\` shows why)" >&2
      return 1
    fi
  else
    echo "unhealthy: HEALTHCHECK_CA/CERT/KEY ask for HTTPS, but neither curl nor openssl" \
      "is installed to speak TLS; install one, or probe a plain-HTTP REST port" >&2
    return 1
  fi
}

probe() {
  local model="$1" path response=""
  path="/v1/models/$(urlencode "$model")"
  if [[ -n "${ca}${cert}${key}" ]]; then
    fetch_https "$model" "$path" || return 1
  else
    fetch_http "$path" || return 1
  fi
  if [[ "${response%%$'\n'*}" != "HTTP/1."[01]" 200"* ]]; then
    echo "unhealthy: ${model}: ${response%%$'\n'*}" >&2
    return 1
  fi
  if [[ "$response" != *'"AVAILABLE"'* ]]; then
    echo "unhealthy: ${model} has no AVAILABLE version" >&2
    return 1
  fi
}

for model in "${models[@]}"; do
  probe "$model"
done
echo "healthy: ${models[*]}"
