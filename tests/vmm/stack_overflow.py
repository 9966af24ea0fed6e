# Overflows the C stack (repr of a deeply nested list with no recursion limit): Linux kills this with
# SIGSEGV; in the micro-VM the 2 MiB guard below the stack must do the same.
import sys
sys.setrecursionlimit(10**7)
l = []
for i in range(10**6):
    l = [l]
repr(l)
