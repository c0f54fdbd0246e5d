// SPDX-License-Identifier: GPL-2.0
/*
 * hello: the smallest out-of-tree module, used by pktfate's VM harness to
 * prove that modules built per kernel load and unload inside the guests.
 */
#include <linux/init.h>
#include <linux/module.h>

static int __init hello_init(void)
{
	pr_info("pktfate hello: loaded\n");
	return 0;
}

static void __exit hello_exit(void)
{
	pr_info("pktfate hello: unloaded\n");
}

module_init(hello_init);
module_exit(hello_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("pktfate VM harness test module");
