// SPDX-License-Identifier: GPL-2.0
/* vigilkit under the module name vk_wp (see Kbuild). */
#include "vigilkit.c"
