#!/usr/bin/env bash
# make install / make uninstall with DESTDIR and PREFIX, as GNU packages do.
. "$(dirname "$0")/lib.sh"
B=${GPT_BUILD:-$TOP/build}
t_run "make install" 0 make -C "$TOP" -s install DESTDIR="$T/root" PREFIX=/opt/gpt B="$B"
for p in gpt-tokshard gpt-init gpt-sched gpt-train gpt-eval; do
	t_true "installed $p" test -x "$T/root/opt/gpt/bin/$p"
	t_true "installed $p(1)" test -f "$T/root/opt/gpt/share/man/man1/$p.1"
done
for f in gpt-shard gpt-weights gpt-sched; do
	t_true "installed $f(5)" test -f "$T/root/opt/gpt/share/man/man5/$f.5"
done
t_run "installed program runs" 0 "$T/root/opt/gpt/bin/gpt-sched" --version
t_run "make uninstall" 0 make -C "$TOP" -s uninstall DESTDIR="$T/root" PREFIX=/opt/gpt B="$B"
t_true "uninstall removed every file" test -z "$(find "$T/root" -type f)"
