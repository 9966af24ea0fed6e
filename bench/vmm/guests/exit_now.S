# A guest whose first instruction is the exit_group syscall: VM create -> first guest exit.
	.text
	.globl _start
_start:
	mov $231, %eax
	xor %edi, %edi
	syscall
	hlt
