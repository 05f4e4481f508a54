/* Stand-in for the kernel's <drm/drm.h>, which linux/kfd_ioctl.h includes and which is not
 * installed everywhere (Debian ships it in libdrm-dev's path, not linux-libc-dev's): KFD's
 * header needs only the kernel integer types and the ioctl macros from it. */
#ifndef GOCR_DRM_SHIM_H
#define GOCR_DRM_SHIM_H
#include <linux/types.h>
#include <linux/ioctl.h>
#endif
