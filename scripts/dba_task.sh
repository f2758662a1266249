# Shared by scripts/replay and scripts/backfill (sourced, not run): show what the task would
# do (--dry-run), ask before writing unless --yes (or not on a terminal: refuse), run it with
# every line also written to a log file, and exit with cdc's own status (1 when a row failed).
#
#   CDC        the cdc command (default: cdc on PATH, else the project's .venv)
#   CDC_LOG_DIR  where the logs go (default: /var/log/cdc if writable, else ./logs)

set -euo pipefail

dba_task() {
    local verb=$1; shift
    local yes=0 args=() target=""
    while (($#)); do
        case $1 in
            --yes) yes=1 ;;
            --target) target=$2; args+=("$1" "$2"); shift ;;
            --target=*) target=${1#--target=}; args+=("$1") ;;
            *) args+=("$1") ;;
        esac
        shift
    done
    local here; here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    local cdc=(${CDC:-})
    if ((${#cdc[@]} == 0)); then
        if command -v cdc >/dev/null; then cdc=(cdc); else cdc=("$here/.venv/bin/python" -m cdc); fi
    fi
    local log_dir=${CDC_LOG_DIR:-/var/log/cdc}
    if ! mkdir -p "$log_dir" 2>/dev/null || [[ ! -w $log_dir ]]; then log_dir=$PWD/logs; mkdir -p "$log_dir"; fi
    local log="$log_dir/$verb-$(date -u +%Y%m%dT%H%M%SZ).log"

    echo "== cdc $verb ${args[*]} (dry run)" | tee -a "$log"
    "${cdc[@]}" "$verb" "${args[@]}" --dry-run 2>&1 | tee -a "$log"
    if ((!yes)); then
        if [[ ! -t 0 ]]; then
            echo "not on a terminal: give --yes to write without asking" | tee -a "$log" >&2
            exit 2
        fi
        read -r -p "write this into target ${target:-?}? type its name to go on: " answer
        if [[ $answer != "$target" || -z $target ]]; then
            echo "not confirmed; nothing written" | tee -a "$log"
            exit 2
        fi
    fi
    echo "== cdc $verb ${args[*]}" | tee -a "$log"
    local status=0
    "${cdc[@]}" "$verb" "${args[@]}" 2>&1 | tee -a "$log" || status=${PIPESTATUS[0]}
    echo "== exit $status; log: $log" | tee -a "$log"
    exit "$status"
}
