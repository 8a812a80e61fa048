// version.cpp -- the installed C++ binding's header compiles (C++17) and links
// through the CMake target resilient_amqp::cpp. Built by scripts/install-test.sh.
#include <resilient_amqp.hpp>

#include <cstdio>
#include <cstring>

int main() {
    if (std::strcmp(amqp_library_version(), AMQP_LIBRARY_VERSION_STRING) != 0) {
        std::fprintf(stderr, "version mismatch\n");
        return 1;
    }
    std::printf("resilient-amqp %s (C++)\n", amqp_library_version());
    return 0;
}
