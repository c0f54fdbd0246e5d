// SPDX-License-Identifier: GPL-2.0
/*
 * warnmod: makes the kernel report an error on purpose, so that pktfate's
 * VM harness can prove such a report fails the kernel's line even when
 * every test passed. Loaded only by the harness's own tests
 * (internal/vm/testdata/kernelerror, run by internal/vm's
 * TestHarnessFailsOnKernelErrors); never part of the matrix.
 *
 *   what=warn  WARN() once at load, then load normally (unloadable)
 *   what=bug   BUG() at load: an oops that kills the loading process
 */
#include <linux/bug.h>
#include <linux/init.h>
#include <linux/module.h>
#include <linux/string.h>

static char *what = "warn";
module_param(what, charp, 0444);
MODULE_PARM_DESC(what, "warn: WARN() at load; bug: BUG() at load");

static int __init warnmod_init(void)
{
	if (!strcmp(what, "bug")) {
		pr_err("pktfate warnmod: deliberate BUG()\n");
		BUG();
	}
	WARN(1, "pktfate warnmod: deliberate warning\n");
	return 0;
}

static void __exit warnmod_exit(void)
{
}

module_init(warnmod_init);
module_exit(warnmod_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("pktfate VM harness test module: deliberate kernel errors");
