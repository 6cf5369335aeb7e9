# Sourced by scripts/check-bundle and scripts/setup. Run from the
# repository's root.
#
# ensure_venv DIR REQUIREMENTS [OPTIONAL...]: a private Python venv at DIR
# with the packages of the REQUIREMENTS file, recreated when that file
# changes. OPTIONAL packages are installed where they can be; a failure
# there is only reported.
ensure_venv() {
  local venv=$1 requirements=$2 stamp=$1/.requirements pip optional
  shift 2
  if [[ -x $venv/bin/python ]] && cmp -s "$requirements" "$stamp"; then
    return 0
  fi
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if python3 -m venv "$venv" >/dev/null 2>&1; then
    pip=("$venv/bin/python" -m pip)
  else
    # Debian without python3-venv has no ensurepip: make the venv bare and let
    # the system's pip (22.3 or later) install into it.
    rm -rf "$venv"
    if python3 -m venv --without-pip "$venv" && python3 -m pip --version >/dev/null 2>&1; then
      pip=(python3 -m pip --python "$venv/bin/python")
    else
      echo "${0##*/}: cannot create a Python venv; apt-get install python3-venv" >&2
      return 1
    fi
  fi
  echo "${0##*/}: installing $(grep -v '^#' "$requirements" | tr '\n' ' ')into $venv"
  "${pip[@]}" install -q --disable-pip-version-check -r "$requirements" || return 1
  for optional in "$@"; do
    "${pip[@]}" install -q --disable-pip-version-check "$optional" ||
      echo "${0##*/}: $optional is not installable here; going on without it" >&2
  done
  cp "$requirements" "$stamp"
}
