# Helpers for the runners in /attacks/run (sourced). Every runner ends with one result line:
#   ATTACK <name> key=value ...   or   ATTACK-FAIL <name> <reason>  (and exit 1)
B=/attacks/bin
M=/attacks/modules

fail() { # NAME REASON...
  n=$1
  shift
  echo "ATTACK-FAIL $n $*"
  exit 1
}

# Start a named idle process (or, with --listen PORT, a listener); sets $pid.
linger() { # NAME ARGS...
  n=$1
  shift
  out=$($B/linger "$@") || fail "$n" "linger $*: $out"
  pid=${out#pid=}
  pid=${pid%% *}
}

# Load one of the rootkit modules; on failure report insmod's error and the module's own kernel messages.
load() { # NAME MODULE PARAMS...
  n=$1
  mod=$2
  shift 2
  if ! err=$(insmod "$M/$mod.ko" "$@" 2>&1); then
    fail "$n" "insmod $mod $*: $err; dmesg: $(dmesg | grep "$mod: " | tail -n 3 | tr '\n' ' ')"
  fi
  dmesg | grep -q "$mod: loaded" || fail "$n" "$mod did not report itself loaded"
}

# With page-table isolation the IDT stub cannot live in a module (see vigilkit.c): hook_idt only without it.
idt_param() {
  if grep -qw pti /proc/cpuinfo; then echo hook_idt=0; else echo hook_idt=1; fi
}
