# Sourced by the bundle scripts: a stream too large for one `run` call (64 MiB at most) split
# into parts of 62 MB, one folder each.
#   tar cf - ... | to_parts DIR      -> DIR/c1 .. DIR/cN (each holding one part_*), DIR/parts = N
to_parts() {
  local dir=$1 n=0 part
  split -b 62000000 -d - "$dir/part_"
  for part in "$dir"/part_*; do
    n=$((n + 1))
    mkdir -p "$dir/c$n" && mv "$part" "$dir/c$n/"
  done
  echo "$n" > "$dir/parts"
}
