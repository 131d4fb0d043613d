/*
 * ABI probe for EpollSharp's io_uring binding: prints the C view of every constant and layout that
 * src/EpollSharp/Interop/Interop.IoUring.cs hard-codes, one "NAME VALUE" line each (VALUE in decimal).
 * tests/EpollSharp.Tests/Backends/IoUringAbiTests.cs compiles it with `cc`, runs it and compares.
 *
 * Build by hand: cc -std=c11 -Wall -Wextra -Werror -o /tmp/io_uring_probe native/probe/io_uring_probe.c
 */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <linux/io_uring.h>
#include <linux/time_types.h>

#define INT(name) printf("%s %ld\n", #name, (long)(name))
#define SIZE(name, type) printf("%s %zu\n", #name, sizeof(type))
#define OFFSET(name, type, field) printf("%s %zu\n", #name, offsetof(type, field))

int main(void)
{
    INT(SYS_io_uring_setup);
    INT(SYS_io_uring_enter);
    INT(SYS_io_uring_register);

    INT(IORING_SETUP_CQSIZE);
    INT(IORING_SETUP_CLAMP);
    INT(IORING_SETUP_R_DISABLED);
    INT(IORING_SETUP_SINGLE_ISSUER);
    INT(IORING_SETUP_DEFER_TASKRUN);
    INT(IORING_REGISTER_ENABLE_RINGS);
    INT(IORING_FEAT_SINGLE_MMAP);
    INT(IORING_FEAT_NODROP);
    INT(IORING_FEAT_EXT_ARG);
    INT(IORING_FEAT_RSRC_TAGS);
#ifdef IORING_FEAT_MIN_TIMEOUT
    INT(IORING_FEAT_MIN_TIMEOUT);
#else
    /* Headers older than Linux 6.12: the test reports the constant unchecked, and checks it against the kernel. */
    printf("IORING_FEAT_MIN_TIMEOUT absent\n");
#endif
    INT(IORING_OFF_SQ_RING);
    INT(IORING_OFF_CQ_RING);
    INT(IORING_OFF_SQES);
    INT(IORING_ENTER_GETEVENTS);
    INT(IORING_ENTER_EXT_ARG);
    INT(IORING_OP_NOP);
    INT(IORING_OP_POLL_ADD);
    INT(IORING_OP_POLL_REMOVE);
    INT(IORING_OP_SENDMSG);
    INT(IORING_OP_TIMEOUT);
    INT(IORING_OP_ASYNC_CANCEL);
    INT(IORING_OP_SEND);
    INT(IORING_OP_RECV);
    INT(IORING_OP_SENDMSG_ZC);
    INT(IOSQE_BUFFER_SELECT);
    INT(IOSQE_IO_LINK);
    INT(IOSQE_FIXED_FILE);
    INT(IOSQE_CQE_SKIP_SUCCESS);
    INT(IORING_OP_FILES_UPDATE);
    INT(IORING_UNREGISTER_FILES);
    INT(IORING_REGISTER_FILES2);
    INT(IORING_RSRC_REGISTER_SPARSE);
    INT(IORING_RECV_MULTISHOT);
    INT(IORING_CQE_F_BUFFER);
    INT(IORING_CQE_BUFFER_SHIFT);
    INT(MSG_NOSIGNAL);
    INT(IORING_REGISTER_PBUF_RING);
    INT(IORING_UNREGISTER_PBUF_RING);
    INT(MAP_PRIVATE);
    INT(MAP_ANONYMOUS);
    INT(IORING_POLL_ADD_MULTI);
    INT(IORING_POLL_UPDATE_EVENTS);
    INT(IORING_POLL_UPDATE_USER_DATA);
    INT(IORING_SQ_CQ_OVERFLOW);
    INT(IORING_CQE_F_MORE);
    INT(IORING_REGISTER_PROBE);
    INT(IO_URING_OP_SUPPORTED);
    INT(PROT_READ);
    INT(PROT_WRITE);
    INT(MAP_SHARED);
    INT(MAP_POPULATE);

    /* Linux 6.12 (incrementally consumed buffer rings): absent from older headers, where the test reports them unchecked.
     * IOU_PBUF_RING_INC is an enumerator, so the macro added with it marks the headers that have both. */
#ifdef IORING_CQE_F_BUF_MORE
    INT(IORING_CQE_F_BUF_MORE);
    INT(IOU_PBUF_RING_INC);
#endif

    /* The last field is resv2 in older headers and user_addr in newer ones: the size checks it. */
    SIZE(SizeofIoSqringOffsets, struct io_sqring_offsets);
    OFFSET(IoSqringOffsetsArray, struct io_sqring_offsets, array);
    SIZE(SizeofIoCqringOffsets, struct io_cqring_offsets);
    OFFSET(IoCqringOffsetsCqes, struct io_cqring_offsets, cqes);
    SIZE(SizeofIoUringParams, struct io_uring_params);
    OFFSET(IoUringParamsFeatures, struct io_uring_params, features);
    OFFSET(IoUringParamsSqOff, struct io_uring_params, sq_off);
    OFFSET(IoUringParamsCqOff, struct io_uring_params, cq_off);
    SIZE(SizeofIoUringSqe, struct io_uring_sqe);
    OFFSET(IoUringSqeFd, struct io_uring_sqe, fd);
    OFFSET(IoUringSqeOff, struct io_uring_sqe, off);
    OFFSET(IoUringSqeAddr, struct io_uring_sqe, addr);
    OFFSET(IoUringSqeLen, struct io_uring_sqe, len);
    OFFSET(IoUringSqeOpFlags, struct io_uring_sqe, poll32_events);
    OFFSET(IoUringSqeUserData, struct io_uring_sqe, user_data);
    OFFSET(IoUringSqeAddr3, struct io_uring_sqe, addr3);
    SIZE(SizeofIoUringCqe, struct io_uring_cqe);
    OFFSET(IoUringCqeRes, struct io_uring_cqe, res);
    OFFSET(IoUringCqeFlags, struct io_uring_cqe, flags);
    SIZE(SizeofIoUringGeteventsArg, struct io_uring_getevents_arg);
    OFFSET(IoUringGeteventsArgTs, struct io_uring_getevents_arg, ts);
#ifdef IORING_FEAT_MIN_TIMEOUT
    OFFSET(IoUringGeteventsArgMinWaitUsec, struct io_uring_getevents_arg, min_wait_usec);
#else
    OFFSET(IoUringGeteventsArgMinWaitUsec, struct io_uring_getevents_arg, pad);
#endif
    SIZE(SizeofKernelTimespec, struct __kernel_timespec);
    SIZE(SizeofIoUringProbeHeader, struct io_uring_probe);
    SIZE(SizeofIoUringProbeOp, struct io_uring_probe_op);
    OFFSET(IoUringProbeOpFlags, struct io_uring_probe_op, flags);
    SIZE(SizeofIoUringBufReg, struct io_uring_buf_reg);
    OFFSET(IoUringBufRegBgid, struct io_uring_buf_reg, bgid);
    SIZE(SizeofIoUringBuf, struct io_uring_buf);
    OFFSET(IoUringBufBid, struct io_uring_buf, bid);
    OFFSET(IoUringSqeBufIndex, struct io_uring_sqe, buf_index);
    OFFSET(IoUringSqeIoPrio, struct io_uring_sqe, ioprio);
    SIZE(SizeofIoUringRsrcRegister, struct io_uring_rsrc_register);
    OFFSET(IoUringRsrcRegisterData, struct io_uring_rsrc_register, data);
    SIZE(SizeofMsgHdr, struct msghdr);
    OFFSET(MsgHdrIov, struct msghdr, msg_iov);
    OFFSET(MsgHdrIovLen, struct msghdr, msg_iovlen);
    return 0;
}
