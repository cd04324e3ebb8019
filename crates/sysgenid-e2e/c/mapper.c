/* A client that behaves like existing mmap libraries: it opens the device read-only, maps its
 * first 4 bytes MAP_SHARED once, and loads the word in a loop. It prints "start N ADDRESS"
 * once (the mapping's address, for a page reclaim from outside), then
 * "gen N" each time the word changes, and exits when its stdin closes. It installs no handler:
 * a fault on the mapping kills it with SIGBUS, which its parent sees. */
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DEVICE\n", argv[0]);
        return 2;
    }
    int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    volatile const uint32_t *word = mmap(NULL, 4, PROT_READ, MAP_SHARED, fd, 0);
    if (word == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    uint32_t seen = *word;
    printf("start %u %lu\n", seen, (unsigned long)word);
    fflush(stdout);
    struct pollfd in = {.fd = 0, .events = POLLIN};
    for (;;) {
        uint32_t now = __atomic_load_n(word, __ATOMIC_ACQUIRE);
        if (now != seen) {
            seen = now;
            printf("gen %u\n", seen);
            fflush(stdout);
        }
        /* stdin readable means closed (the parent never writes): stop. */
        if (poll(&in, 1, 1) > 0) {
            return 0;
        }
    }
}
