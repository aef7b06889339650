/* Small file-system helpers both programs and the tests share. */
#ifndef UNDERSTUDY_FSUTIL_H
#define UNDERSTUDY_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

/* mkdir -p of the directory named by the first len bytes of path: creates each missing
 * component with mode (directories that exist are left as they are). A file's parents are
 * fs_mkdirs(file, strrchr(file, '/') - file, mode). 0, or a negative errno (-ENAMETOOLONG when
 * len reaches PATH_MAX). */
int fs_mkdirs(const char *path, size_t len, mode_t mode);

#endif
