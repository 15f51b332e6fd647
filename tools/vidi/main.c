/* tools/vidi/main.c — the `vidi` command line.
 *
 *   vidi info                 what this build has (backends, devices)
 */
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#ifdef VIDI_HAVE_CUDA
#include "kernels/cuda/cuda_info.h"
#endif

static int cmd_info(void) {
    printf("vidi 0.1.0\n");
    printf("backends: cpu");
#ifdef VIDI_HAVE_CUDA
    printf(" cuda\n");
    int n = vidi_cuda_device_count();
    printf("cuda devices: %d\n", n);
    for (int i = 0; i < n; i++) {
        char line[256];
        vidi_cuda_device_describe(i, line, sizeof line);
        printf("  %d: %s\n", i, line);
    }
#else
    printf("\n");
#endif
    return 0;
}

static void usage(FILE *f) {
    fprintf(f, "usage: vidi <command> [options]\n"
               "commands:\n"
               "  info       what this build has (backends, devices)\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "info")) return cmd_info();
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "vidi: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
