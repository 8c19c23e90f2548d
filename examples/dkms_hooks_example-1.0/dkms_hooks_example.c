// SPDX-License-Identifier: GPL-2.0
/* The example module dkms-hooks builds for every kernel: it says hello when loaded. */
#include <linux/init.h>
#include <linux/module.h>

static int __init dkms_hooks_example_init(void)
{
	pr_info("dkms_hooks_example: loaded, built by dkms-hooks\n");
	return 0;
}

static void __exit dkms_hooks_example_exit(void)
{
	pr_info("dkms_hooks_example: unloaded\n");
}

module_init(dkms_hooks_example_init);
module_exit(dkms_hooks_example_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("1.0");
MODULE_DESCRIPTION("dkms-hooks example module");
